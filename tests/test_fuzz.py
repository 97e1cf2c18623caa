"""Untrusted GGUF files: mutated copies of a real one (testbeds/fuzz.py) each end in the model
opening or in one sentence, within a time and memory limit; and each failure the fuzzing
found stays fixed, as a case of its own.

The seeded run here is bounded (300 cases, one process under a 3 GB address-space limit);
tools/fuzz_campaign.py runs thousands (docs/testing.md gives its figures).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

import tokenizer_setup
from plumbing import REPO_DIR, checkpoints
from plumbing.friendly_errors import CheckpointError
from testbeds import fuzz

MEMORY_LIMIT = 3 * 2**30


def limited() -> None:  # in the child, before it runs: allocations past 3 GB fail
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_300_mutated_gguf_files_end_in_the_model_or_one_sentence():
    result = subprocess.run(
        [sys.executable, "-m", "testbeds.fuzz", "--cases", "300", "--seed", "0"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cases"] == 300
    replay = "; ".join(
        f"seed {f['seed']} ({f['mutation']}): {f['error']} — python -m testbeds.fuzz --replay "
        f"{f['seed']}"
        for f in report["failures"]
    )
    assert not report["failures"], replay


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-base")
    return fuzz.base_file(folder)


def test_a_vocabulary_string_that_is_not_utf8(base, tmp_path):
    # found by the fuzzing (seeds 236, 312 and 645 of the first thousand): gguf decoded the
    # token list and raised UnicodeDecodeError from inside its reader
    key = b"tokenizer.ggml.tokens"
    first_text = base.index(key) + len(key) + 4 + 4 + 8 + 8  # type, item type, count, length
    damaged = bytearray(base)
    damaged[first_text] = 0xB2  # a continuation byte with nothing to continue
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(damaged))
    checkpoint = checkpoints.open_checkpoint(path)
    sentence = r"damaged\.gguf: its metadata tokenizer\.ggml\.tokens holds text that is not UTF-8"
    with pytest.raises(CheckpointError, match=sentence):
        tokenizer_setup.load_tokenizer(checkpoint.tokenizer_source)
