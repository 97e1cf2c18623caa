"""Mutated copies of a GGUF file, each opened as the notebook opens it: every case must end in
the model opening or in one sentence (a SetupError), nothing else.

    python -m testbeds.fuzz --cases 300 --seed 0      # one JSON line: cases run, failures

A case: the base file (the embedded model in Q4_0, with a 300-token vocabulary so that a case
opens in milliseconds; the tokenizer then refuses it in one sentence) mutated by one seeded
mutation, then `open_checkpoint`, `check()`, its first and last tensor used, its tokenizer
loaded. A failure is any other exception, a case past CASE_SECONDS, or a MemoryError: run
under an address-space limit (tests/test_fuzz.py and tools/fuzz_campaign.py set 3 GB), an
allocation past it fails instead of swapping. Each failure carries its seed, which replays it:
`python -m testbeds.fuzz --replay SEED`.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import struct
import sys
import tempfile
from pathlib import Path

import tokenizer_setup
from plumbing import checkpoints, gguf_files
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.friendly_errors import SetupError

CASE_SECONDS = 20
HUGE = [2**63 - 1, 2**64 - 1, 2**40, 2**32, 2**31 - 1, 0]


def base_file(folder: Path) -> bytes:
    """The embedded model as a Q4_0 GGUF file with Llama 3's first 300 tokens."""
    from testbeds.gguf_writer import vocabulary_text, write_gguf

    source = checkpoints.open_checkpoint(EMBEDDED_CHECKPOINT).tokenizer_source
    tokens = vocabulary_text(tokenizer_setup.load_tokenizer(source))[:300]
    path = write_gguf(
        EMBEDDED_CHECKPOINT, folder / "base.gguf", "Q4_0", vocabulary=("gpt2", tokens)
    )
    return path.read_bytes()


def metadata_end(path: Path) -> int:
    """Where the tensors' data begins: the header, metadata and tensor index lie before it."""
    return min(t.data_offset for t in gguf_files.open_gguf(path).tensors)


def mutate(data: bytes, seed: int, header: int) -> tuple[bytes, str]:
    """One seeded mutation, mostly inside the first `header` bytes."""
    rng = random.Random(seed)
    out = bytearray(data)
    where = header if rng.random() < 0.85 else len(out)
    kind = rng.choice(["flip", "run", "cut", "huge", "count", "zero-run"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(where)] ^= 1 << rng.randrange(8)
        return bytes(out), kind
    if kind in ("run", "zero-run"):
        start, length = rng.randrange(where), rng.randint(1, 64)
        fill = bytes(rng.randrange(256) for _ in range(length)) if kind == "run" else bytes(length)
        out[start : start + length] = fill[: len(out) - start]
        return bytes(out), f"{kind} of {length} at {start}"
    if kind == "cut":
        point = rng.randrange(len(out))
        return bytes(out[:point]), f"cut at {point}"
    value = rng.choice(HUGE)
    if kind == "count":  # the version, the tensor count or the metadata count
        offset = rng.choice([4, 8, 16])
        size = 4 if offset == 4 else 8
    else:  # any 8 bytes of the header read as a length or a count
        offset, size = rng.randrange(max(1, header - 8)), 8
    out[offset : offset + size] = struct.pack("<Q", value)[:size]
    return bytes(out), f"{kind} {value} at {offset}"


class Timeout(Exception):
    pass


def _alarm(*_):
    raise Timeout()


def open_as_the_notebook_does(path: Path) -> None:
    checkpoint = checkpoints.open_checkpoint(path)
    checkpoint.check()
    names = list(checkpoint.weights)
    for name in (names[0], names[-1]):
        checkpoint.weights[name].float()
    tokenizer_setup.load_tokenizer(checkpoint.tokenizer_source)


def run_case(data: bytes, seed: int, header: int, folder: Path) -> dict | None:
    """None when the case opened or stopped in one sentence; else what went wrong."""
    mutated, mutation = mutate(data, seed, header)
    path = folder / f"case-{seed}.gguf"  # its own name: the reader cache keys on the path
    path.write_bytes(mutated)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        open_as_the_notebook_does(path)
        problem = None
    except SetupError:
        problem = None
    except Timeout:
        problem = f"no answer within {CASE_SECONDS} s"
    except Exception as error:  # the failures this fuzzing is for
        problem = f"{type(error).__name__}: {str(error)[:200]}"
    finally:
        signal.alarm(0)
        path.unlink()
        gguf_files.forget(path)
    return None if problem is None else {"seed": seed, "mutation": mutation, "error": problem}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=int, help="run the one case of this seed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data = base_file(folder)
        header = metadata_end(folder / "base.gguf")
        seeds = (
            [args.replay] if args.replay is not None else range(args.seed, args.seed + args.cases)
        )
        failures = [f for seed in seeds if (f := run_case(data, seed, header, folder))]
    print(json.dumps({"cases": len(seeds), "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
