"""Untrusted files: mutated copies of real ones (testbeds/fuzz.py: a GGUF file, a safetensors
file, params.json, config.json, an Ollama manifest and a prompt file) each end in the model
opening (or the prompt read) or in one sentence, within a time and memory limit, and nothing
outside Ollama's blobs is reached; and each failure the fuzzing found stays fixed, as a case of
its own.

The seeded run here is bounded (fuzz.SUITE_CASES cases of each format, all in one process under
a 3 GB address-space limit); tools/fuzz_campaign.py runs thousands, tokenizer.json's and
tokenizer.model's too (docs/testing.md gives its figures).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

import tokenizer_setup
from plumbing import REPO_DIR, checkpoint_files, checkpoints, gguf_files, run_settings
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.friendly_errors import CheckpointError, SetupError
from testbeds import fuzz
from tokenizer_setup import TokenizerFileError


@pytest.fixture(scope="module")
def reports():
    """Every format's seeded cases in one process (its imports and the Hugging Face folder
    made once): each format's report, by format."""
    command = [sys.executable, "-m", "testbeds.fuzz", "--seed", "0", "--cases"]
    command += [str(fuzz.SUITE_CASES), "--format", *fuzz.SUITE_FORMATS]
    result = subprocess.run(
        command, cwd=REPO_DIR, capture_output=True, text=True, timeout=300, preexec_fn=fuzz.limited
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stderr[-3000:]
    return {report["format"]: report for report in lines} | {"stderr": result.stderr[-3000:]}


@pytest.mark.slow  # about 11 s of cases: in `make test`, not in the edit loop (`make quick`)
@pytest.mark.parametrize("kind", fuzz.SUITE_FORMATS)
def test_mutated_files_end_in_the_model_or_one_sentence(reports, kind):
    assert kind in reports, f"the run stopped before {kind}: {reports['stderr']}"
    report = reports[kind]
    assert report["cases"] == fuzz.SUITE_CASES
    replay = "; ".join(
        f"seed {f['seed']} ({f['mutation']}): {f['error']} — python -m testbeds.fuzz --format "
        f"{kind} --replay {f['seed']}"
        for f in report["failures"]
    )
    assert not report["failures"], replay


@pytest.mark.slow  # builds two Hugging Face folders (seconds)
def test_the_index_mutations_write_where_the_index_is(tmp_path):
    # "gguf index" moves a tensor's name, dimensions or data offset by the file's own
    # structure: each place it writes is, in the unmutated file, what gguf reads there; and
    # each of its four kinds comes up within a few seeds
    data = fuzz.base_file(tmp_path)
    index = fuzz.tensor_index(tmp_path / "base.gguf")
    tensors = gguf_files.open_gguf(tmp_path / "base.gguf").tensors
    start = min(tensor.data_offset for tensor in tensors)
    for entry, tensor in zip(index, tensors, strict=True):
        (name_at, length), (dims_at, n_dims) = entry["name"], entry["dims"]
        assert data[name_at : name_at + length] == tensor.name.encode()
        dims = struct.unpack(f"<{n_dims}Q", data[dims_at : dims_at + 8 * n_dims])
        assert list(dims) == [int(d) for d in tensor.shape]
        at, offset = entry["offset"]
        assert struct.unpack("<Q", data[at : at + 8])[0] == offset - start
    mutations = [fuzz.mutate_index(data, seed, index)[1] for seed in range(40)]
    for kind in ("named as another", "(overlap)", "(past the end)", "dimension"):
        assert any(kind in mutation for mutation in mutations), kind


def test_each_base_opens_as_a_model(tmp_path, monkeypatch):
    # unmutated, every format's base opens, checks and reads: else each case would stop in
    # one sentence whatever the mutation, and the fuzzing would test nothing. The tokenizer
    # too where the cases load it (the GGUF base's 300 tokens of Llama 3's are refused by
    # design, and the small folder has none)
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(fuzz.base_file(tmp_path))
    with pytest.raises(TokenizerFileError, match="holds 300 tokens that are not Llama 3's"):
        fuzz.open_as_the_notebook_does(gguf)  # the model opened, checked and read; then this
    qwen3 = tmp_path / "qwen3.gguf"  # the Qwen3 bases too: norms, head width, vocabulary
    qwen3.write_bytes(fuzz.qwen3_base_file(tmp_path))
    fuzz.open_as_the_notebook_does(qwen3)
    fuzz.open_as_the_notebook_does(fuzz.qwen3_folder(tmp_path), tokenizer=True)
    cases = [(EMBEDDED_CHECKPOINT, True), (fuzz.hf_folder(tmp_path), True)]
    for path, tokenizer in [*cases, (fuzz.hf_folder(tmp_path, small=True), False)]:
        fuzz.open_as_the_notebook_does(path, tokenizer)
    # the manifest, unmutated, names its blob, which opens as the GGUF base does
    models, _, _ = fuzz.ollama_models(tmp_path / "manifest", gguf.read_bytes())
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    found = checkpoint_files.find_checkpoint_dir(fuzz.OLLAMA_NAME)
    assert found.parent == models / "blobs"
    with pytest.raises(TokenizerFileError, match="holds 300 tokens"):
        fuzz.open_as_the_notebook_does(found)
    # the prompt file, unmutated, is read whole
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(fuzz.PROMPT_TEXT, encoding="utf-8")
    assert run_settings.choose_prompt(None, str(prompt)) == fuzz.PROMPT_TEXT


def test_a_manifest_whose_model_layer_is_not_an_object(tmp_path, monkeypatch):
    # found by the fuzzing (seed 17 of the first 200: "model layer: not a dict"; and `layers`
    # of numbers or text): `layer.get` raised AttributeError from inside the manifest reader
    models, manifest, text = fuzz.ollama_models(tmp_path, b"GGUF")
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    for layers in ([json.loads(text)["layers"]], ["64"], [64]):
        manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
        with pytest.raises(CheckpointError, match="is not an Ollama manifest that names a model"):
            checkpoint_files.find_checkpoint_dir(fuzz.OLLAMA_NAME)


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


# Found by the fuzzing of params.json and config.json (seeds of the first 300), each a
# TypeError, MemoryError, OverflowError or RecursionError from deep inside before the fix.
JSON_FINDINGS = {
    "a size that is null": ("params.json", {"n_layers": None}, r"n_layers is None, it must be an"),
    "multiple_of null": ("params.json", {"multiple_of": None}, r"multiple_of is None, it must be"),
    "2^31 layers": ("params.json", {"n_layers": 2**31}, r"n_layers is 2,147,483,648, more than"),
    "a multiplier of 1e308": (
        "params.json",
        {"ffn_dim_multiplier": 1e308},
        r"ffn_dim_multiplier is 1e\+308, more than any Llama model states",
    ),
    "NaN": ("params.json", {"norm_eps": float("nan")}, r"norm_eps is nan, it must be positive"),
    "nested 10,000 deep": ("params.json", "deep", r"nests its values too deeply"),
    "architectures a number": (
        "config.json",
        {"architectures": 2**31},
        r"architectures is 2147483648, not a list of names",
    ),
    "head_dim an object": ("config.json", {"head_dim": {}}, r"head_dim is \{\}, it must be an"),
    "a config size that is null": (
        "config.json",
        {"num_hidden_layers": None},
        r"num_hidden_layers is None, it must be an integer",
    ),
    "2^63 layers": (
        "config.json",
        {"num_hidden_layers": 2**63},
        r"num_hidden_layers is 9,223,372,036,854,775,808, more than any Llama model states",
    ),
    # found by the fuzzing of a Qwen3 config.json (2026-12-06): a TypeError before the fix
    "model_type a list": ("config.json", {"model_type": [64]}, r"describes LlamaForCausalLM, not"),
}


# Found by the fuzzing of tokenizer.json (seeds 0-299): a TypeError, AttributeError or
# RecursionError from inside the reader before the fix.
TOKENIZER_FINDINGS = {
    "added_tokens a number": ({"added_tokens": 1e308}, r"its added_tokens is not a list of tokens"),
    "added_tokens of numbers": ({"added_tokens": [64]}, r"its added_tokens is not a list of"),
    "an id that is text": ("text id", r"its added_tokens is not a list of tokens, each a text"),
    "nested 10,000 deep": ("deep", r"is not readable JSON \(RecursionError\)"),
}


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    return fuzz.hf_folder(tmp_path_factory.mktemp("fuzz-hf"))


@pytest.mark.parametrize("finding", JSON_FINDINGS)
def test_each_json_finding_is_one_sentence(finding, hf_base, tmp_path):
    name, change, sentence = JSON_FINDINGS[finding]
    base = EMBEDDED_CHECKPOINT if name == "params.json" else hf_base
    document = json.loads((base / name).read_text())
    if change == "deep":
        text = json.dumps({**document, "dim": 0}).replace(
            '"dim": 0', '"dim": ' + "[" * 10_000 + "]" * 10_000
        )
    else:
        text = json.dumps({**document, **change})
    folder = fuzz.folder_case(base, name, text, tmp_path / "case")
    with pytest.raises(CheckpointError, match=sentence):
        checkpoints.open_checkpoint(folder)


@pytest.mark.slow  # each loads a 128,256-token vocabulary: in `make test`, not `make quick`
@pytest.mark.parametrize("finding", TOKENIZER_FINDINGS)
def test_each_tokenizer_json_finding_is_one_sentence(finding, hf_base, tmp_path):
    change, sentence = TOKENIZER_FINDINGS[finding]
    document = json.loads((hf_base / "tokenizer.json").read_text())
    if change == "deep":
        text = json.dumps({**document, "version": 0}).replace(
            '"version": 0', '"version": ' + "[" * 10_000 + "]" * 10_000
        )
    elif change == "text id":
        tokens = [{**document["added_tokens"][0], "id": "128000"}, *document["added_tokens"][1:]]
        text = json.dumps({**document, "added_tokens": tokens})
    else:
        text = json.dumps({**document, **change})
    folder = fuzz.folder_case(hf_base, "tokenizer.json", text, tmp_path / "case")
    checkpoint = checkpoints.open_checkpoint(folder)
    with pytest.raises(SetupError, match=sentence):
        tokenizer_setup.load_tokenizer(checkpoint.tokenizer_source)


# Found by the fuzzing of a Qwen3 GGUF file (2026-12-06, seeds 1,000–5,999): a tensor name
# damaged so that it is no longer Meta's once read (a KeyError before the fix).
QWEN3_GGUF_FINDINGS = [1116, 1568, 2098, 3370]


@pytest.mark.slow  # writes a Qwen3 folder with transformers (seconds)
def test_each_qwen3_gguf_finding_is_the_model_or_one_sentence(tmp_path):
    data = fuzz.qwen3_base_file(tmp_path)
    header = fuzz.metadata_end(tmp_path / "base-qwen3.gguf")
    for seed in QWEN3_GGUF_FINDINGS:
        assert fuzz.run_case(data, seed, header, tmp_path) is None, seed


@pytest.mark.slow  # opens a few mutated GGUF files
def test_a_campaign_mutates_the_gguf_file_it_is_given(tmp_path, monkeypatch):
    # --base: a file made elsewhere (llama.cpp's converter and quantizer) in place of the
    # project's own base, which is then never made
    given = tmp_path / "given.gguf"
    given.write_bytes(fuzz.base_file(tmp_path))
    monkeypatch.setattr(fuzz, "base_file", lambda folder: pytest.fail("made its own base"))
    assert fuzz.run_format("gguf", range(3), tmp_path, hf=None, base=given) == []
