"""Mutated copies of a GGUF file, of a Hugging Face folder's safetensors file, and of the JSON
files checkpoints hold, each opened as the notebook opens it: every case must end in the model
opening or in one sentence (a SetupError), nothing else.

    python -m testbeds.fuzz --cases 300 --seed 0 --format gguf safetensors
    # one JSON line a format: cases run, failures

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
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

import tokenizer_setup
from plumbing import REPO_DIR, checkpoint_files, checkpoints, gguf_files, model_ids, run_settings
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from plumbing.friendly_errors import SetupError
from testbeds.gguf_writer import vocabulary_text, write_gguf

CASE_SECONDS = 20
MEMORY_LIMIT = 3 * 2**30  # what a fuzzing process may hold: an allocation past it fails


def limited() -> None:
    """In a fuzzing child, before it runs (`preexec_fn`): allocations past MEMORY_LIMIT fail.
    RLIMIT_DATA (the heap and anonymous maps), not RLIMIT_AS: a CUDA build of torch maps more
    than 3 GB of libraries when imported, so under RLIMIT_AS the child could not even start."""
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


SMALL_VOCABULARY = 300
FORMATS = [
    "gguf",
    "gguf index",
    "safetensors",
    "params.json",
    "config.json",
    "ollama manifest",
    "prompt file",
    "qwen3 gguf",
    "qwen3 config.json",
    "qwen3 tokenizer.json",
    "tokenizer.json",
    "tokenizer.model",
]
# Cases per format in `make test` (tests/test_fuzz.py): a thousand in all, about 11 s (200 each
# took 22 s of the suite's five minutes, 2026-12-06); tools/fuzz_campaign.py runs thousands.
# A tokenizer.json or tokenizer.model case loads a 128,256-token vocabulary (about a second),
# so those are fuzzed in the campaign only; the Qwen3 folder's vocabulary is a few thousand
# tokens.
SUITE_FORMATS = [kind for kind in FORMATS if kind not in ("tokenizer.json", "tokenizer.model")]
SUITE_CASES = 100  # of each
HUGE = [2**63 - 1, 2**64 - 1, 2**40, 2**32, 2**31 - 1, 0]


def base_file(folder: Path) -> bytes:
    """The embedded model as a Q4_0 GGUF file with Llama 3's first 300 tokens."""
    source = checkpoints.open_checkpoint(EMBEDDED_CHECKPOINT).tokenizer_source
    tokens = vocabulary_text(tokenizer_setup.load_tokenizer(source))[:300]
    path = write_gguf(
        EMBEDDED_CHECKPOINT, folder / "base.gguf", "Q4_0", vocabulary=("gpt2", tokens)
    )
    return path.read_bytes()


def qwen3_folder(folder: Path) -> Path:
    """A random Qwen3 folder (its per-head norms, its stated head width) with a vocabulary
    laid out as Qwen3's is, trained on the corpus (about 2,600 tokens): what its config.json,
    tokenizer.json and GGUF cases read."""
    from testbeds.hf_folder import write_random_qwen3  # here: it imports transformers (seconds)

    out = folder / "qwen3-small"
    if not out.exists():
        write_random_qwen3(
            out, texts=(REPO_DIR / "generators" / "corpus.txt").read_text().split("\n")
        )
    return out


def qwen3_base_file(folder: Path) -> bytes:
    """That Qwen3 as a Q4_0 GGUF file (architecture qwen3) with its vocabulary: its tokens,
    their types, its merges and Qwen's pattern's name, as llama.cpp's converter writes them."""
    path = folder / "base-qwen3.gguf"
    write_gguf(qwen3_folder(folder), path, "Q4_0", "qwen3")
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


def tensor_index(path: Path) -> list[dict]:
    """Where each tensor's entry lies in a GGUF file's index: its name (at, length), its
    dimensions (at, count) and its data offset (at, value), in bytes from the file's start."""
    entries = []
    for tensor in gguf_files.open_gguf(path).tensors:
        name_at = tensor.field.offset + 8  # after the name's 8-byte length
        n_dims = len(tensor.shape)
        dims_at = name_at + len(tensor.name.encode()) + 4  # after the name and n_dims (uint32)
        entries.append(
            {
                "name": (name_at, len(tensor.name.encode())),
                "dims": (dims_at, n_dims),
                "offset": (dims_at + 8 * n_dims + 4, tensor.data_offset),  # after the type
            }
        )
    return entries


def mutate_index(data: bytes, seed: int, index: list[dict]) -> tuple[bytes, str]:
    """One seeded mutation of the tensor index, with the file's own structure: two tensors
    given one name, a tensor's data moved onto another's or past the file's end, or a
    dimension set so that the shape multiplies past any memory."""
    rng = random.Random(seed)
    out = bytearray(data)
    i = rng.randrange(len(index))
    kind = rng.choice(["duplicate", "overlap", "past the end", "shape"])
    if kind == "duplicate":  # a name of the same length, so that the index still parses
        at, length = index[i]["name"]
        same = [e for e in index if e["name"][1] == length and e is not index[i]] or [index[i]]
        other_at = rng.choice(same)["name"][0]
        out[at : at + length] = data[other_at : other_at + length]
        return bytes(out), f"tensor {i} named as another"
    if kind == "shape":
        at, n_dims = index[i]["dims"]
        value, dim = rng.choice([2**32, 2**40, 2**62, 2**63 - 1, 0]), rng.randrange(n_dims)
        out[at + 8 * dim : at + 8 * dim + 8] = struct.pack("<Q", value)
        return bytes(out), f"tensor {i}'s dimension {dim} set to {value}"
    at, offset = index[i]["offset"]
    start = min(e["offset"][1] for e in index)  # the data section, as the file states offsets
    if kind == "overlap":
        target = index[rng.randrange(len(index))]["offset"][1] + rng.choice([0, 1, 32])
    else:
        target = len(data) - start + rng.choice([0, 1, 2**20, 2**40])
    out[at : at + 8] = struct.pack("<Q", target - start)
    return bytes(out), f"tensor {i}'s data at {target - start} ({kind})"


def run_index_case(data: bytes, seed: int, index: list[dict], folder: Path) -> dict | None:
    """A GGUF file whose tensor index is mutated with its structure (`mutate_index`)."""
    mutated, mutation = mutate_index(data, seed, index)
    path = folder / f"index-case-{seed}.gguf"
    path.write_bytes(mutated)
    return outcome(path, seed, mutation)


class Timeout(Exception):
    pass


def _alarm(*_):
    raise Timeout()


def open_as_the_notebook_does(path: Path, tokenizer: bool = False) -> None:
    """The setup cell's reading of a checkpoint; the tokenizer too where the file holds it, or
    where it is the file mutated (a folder's params.json or config.json does not touch it)."""
    checkpoint = checkpoints.open_checkpoint(path)
    checkpoint.check()
    names = list(checkpoint.weights)
    for name in (names[0], names[-1]):
        checkpoint.weights[name].float()
    if tokenizer or not path.is_dir():
        tokenizer_setup.load_tokenizer(checkpoint.tokenizer_source)


JSON_VALUES = [
    2**63,
    2**31,
    -1,
    0,
    1e308,
    float("nan"),
    float("inf"),
    -0.5,
    "64",
    None,
    True,
    [],
    {},
    [64],
]


def mutate_json(text: str, seed: int) -> tuple[str, str]:
    """One seeded mutation of a JSON object's text: a key's value of another type or size, a
    key removed or repeated, nesting too deep to read, or the bytes flipped or cut."""
    rng = random.Random(seed)
    document = json.loads(text)
    keys = sorted(document)
    kind = rng.choice(["value", "value", "value", "drop", "repeat", "deep", "flip", "cut"])
    if kind == "value":
        key, value = rng.choice(keys), rng.choice(JSON_VALUES)
        return json.dumps({**document, key: value}), f"{key} = {value!r}"
    if kind == "drop":
        key = rng.choice(keys)
        return json.dumps({k: v for k, v in document.items() if k != key}), f"no {key}"
    if kind == "repeat":
        key = rng.choice(keys)
        return text.rstrip().rstrip("}") + f', "{key}": -7}}', f"{key} twice"
    if kind == "deep":
        depth = rng.choice([100, 10_000, 200_000])
        return json.dumps({**document, rng.choice(keys): 0}).replace(
            "0}", "[" * depth + "]" * depth + "}", 1
        ), f"nested {depth} deep"
    raw = bytearray(text.encode())
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return raw.decode("utf-8", errors="surrogateescape"), "bits flipped"
    point = rng.randrange(len(raw))
    return raw[:point].decode("utf-8", errors="ignore"), f"cut at {point}"


def folder_case(base: Path, name: str, content: str | bytes, where: Path) -> Path:
    """A checkpoint folder: `base`'s files linked (read in place, never written), but `name`."""
    where.mkdir()
    for path in base.iterdir():
        if path.name != name:
            (where / path.name).symlink_to(path.resolve())
    if isinstance(content, bytes):
        (where / name).write_bytes(content)
    else:
        (where / name).write_text(content, encoding="utf-8", errors="surrogateescape")
    return where


def safetensors_header_end(data: bytes) -> int:
    """A safetensors file: 8 bytes of header length, the JSON header, then the tensors."""
    return 8 + int.from_bytes(data[:8], "little")


def run_safetensors_case(base: Path, data: bytes, seed: int, folder: Path) -> dict | None:
    """The folder's model.safetensors, mutated (mostly in its length and JSON header)."""
    mutated, mutation = mutate(data, seed, safetensors_header_end(data))
    where = folder_case(base, "model.safetensors", mutated, folder / f"case-{seed}")
    return outcome(where, seed, mutation)


def run_case(data: bytes, seed: int, header: int, folder: Path) -> dict | None:
    """None when the case opened or stopped in one sentence; else what went wrong."""
    mutated, mutation = mutate(data, seed, header)
    path = folder / f"case-{seed}.gguf"  # its own name: the reader cache keys on the path
    path.write_bytes(mutated)
    return outcome(path, seed, mutation)


def run_json_case(base: Path, name: str, seed: int, folder: Path) -> dict | None:
    """`name` (params.json, config.json or tokenizer.json) of the checkpoint folder `base`,
    mutated."""
    text, mutation = mutate_json((base / name).read_text(), seed)
    where = folder_case(base, name, text, folder / f"case-{seed}")
    return outcome(where, seed, mutation, tokenizer=name == "tokenizer.json")


def outcome(path: Path, seed: int, mutation: str, tokenizer: bool = False) -> dict | None:
    """`path` opened as the notebook opens it, then removed: None when it opened or stopped in
    one sentence; else what went wrong."""

    def removed():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
            gguf_files.forget(path)

    return attempt(lambda: open_as_the_notebook_does(path, tokenizer), seed, mutation, removed)


def attempt(action, seed: int, mutation: str, cleanup=lambda: None) -> dict | None:
    """`action()` under the time limit: None when it ended or stopped in one sentence."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        action()
        problem = None
    except SetupError:
        problem = None
    except Timeout:
        problem = f"no answer within {CASE_SECONDS} s"
    except Exception as error:  # the failures this fuzzing is for
        problem = f"{type(error).__name__}: {str(error)[:200]}"
    finally:
        signal.alarm(0)
        cleanup()
    return None if problem is None else {"seed": seed, "mutation": mutation, "error": problem}


# ---- an Ollama manifest -----------------------------------------------------------------------

OLLAMA_NAME = "llama3-fuzz:latest"
# What a crafted manifest may give as its model's digest (the blob's name): paths out of the
# blobs folder, near misses of sha256's form, other types.
CRAFTED_DIGESTS = [
    "sha256:../../outside",
    "../outside",
    "/etc/hostname",
    "sha256:" + "0" * 63,
    "sha256:" + "A" * 64,
    "sha256:" + "0" * 64 + "/../../outside",
    "sha256:" + "f" * 64,  # well formed, no such blob
    "",
    12,
    None,
    ["sha256:" + "0" * 64],
    {"digest": "x"},
]


def ollama_models(folder: Path, blob: bytes) -> tuple[Path, Path, str]:
    """Ollama's models folder holding one model, OLLAMA_NAME, `blob` its file: the folder, its
    manifest and the manifest's text, written. A file `outside` sits beside blobs/, where
    `../outside` would reach."""
    models = folder / "ollama"
    (models / "blobs").mkdir(parents=True)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (models / "blobs" / digest.replace(":", "-")).write_bytes(blob)
    (models / "outside").write_bytes(blob)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
        {"mediaType": model_ids.OLLAMA_MODEL_LAYER, "digest": digest, "size": len(blob)},
    ]
    text = json.dumps({"schemaVersion": 2, "layers": layers})
    manifest = model_ids.ollama_manifest(models, OLLAMA_NAME)
    manifest.parent.mkdir(parents=True)
    manifest.write_text(text)
    return models, manifest, text


def mutate_manifest(text: str, seed: int) -> tuple[str, str]:
    """A JSON mutation of the whole manifest, or of its model layer: a crafted digest, the
    media type changed or gone, the layer repeated."""
    rng = random.Random(seed)
    kind = rng.choice(["json", "json", "digest", "digest", "layer"])
    if kind == "json":
        return mutate_json(text, seed)
    document = json.loads(text)
    layer = document["layers"][1]
    if kind == "digest":
        layer["digest"] = rng.choice(CRAFTED_DIGESTS)
        return json.dumps(document), f"digest {layer['digest']!r}"
    change = rng.choice(["media", "no media", "twice", "not a dict"])
    if change == "media":
        layer["mediaType"] = "application/vnd.ollama.image.adapter"
    elif change == "no media":
        del layer["mediaType"]
    elif change == "twice":
        document["layers"].append(dict(layer, digest="sha256:" + "e" * 64))
    else:
        document["layers"][1] = [layer]
    return json.dumps(document), f"model layer: {change}"


def run_manifest_case(models: Path, manifest: Path, text: str, seed: int) -> dict | None:
    """The manifest mutated, then the name resolved and opened as the setup cell does; a path
    outside the blobs folder is a failure even if it opens."""
    mutated, mutation = mutate_manifest(text, seed)
    manifest.write_text(mutated, encoding="utf-8", errors="surrogateescape")

    def resolve_and_open():
        found = checkpoint_files.find_checkpoint_dir(OLLAMA_NAME)
        if found.parent != models / "blobs":
            raise AssertionError(f"resolved to {found}, outside {models / 'blobs'}")
        open_as_the_notebook_does(found)

    os.environ["OLLAMA_MODELS"] = str(models)
    return attempt(resolve_and_open, seed, mutation)


# ---- a prompt file --------------------------------------------------------------------------

PROMPT_TEXT = (
    "the answer to the ultimate question of life, the universe, and everything is \n"
    "например, столица Федерации; 日本語の文章 🦙 <|eot_id|>\r\n\tline three"
)


def run_prompt_case(seed: int, folder: Path, tokenizer, params) -> dict | None:
    """LLAMA3_PROMPT_FILE: the prompt's bytes mutated, or now and then not a text file at all (a
    pipe, a device, a file past any context, a link to itself); read, tokenized and checked
    as the setup cell does."""
    rng = random.Random(seed)
    path = folder / f"prompt-{seed}.txt"
    if rng.random() < 0.1:
        mutation = rng.choice(["pipe", "device", "huge", "loop", "folder"])
        if mutation == "pipe":
            os.mkfifo(path)
        elif mutation == "device":
            path.symlink_to("/dev/zero")
        elif mutation == "huge":
            with open(path, "wb") as sparse:
                sparse.truncate(rng.choice([2**31, 2**40]))
        elif mutation == "loop":
            path.symlink_to(path)
        else:
            path.mkdir()
    else:
        data, mutation = mutate(PROMPT_TEXT.encode(), seed, len(PROMPT_TEXT.encode()))
        path.write_bytes(data)

    def read_and_check():
        prompt = run_settings.choose_prompt(None, str(path))
        bos = tokenizer.encode_single_token("<|begin_of_text|>")
        tokens = [bos] + tokenizer.encode(prompt, disallowed_special=())
        with contextlib.redirect_stdout(io.StringIO()):  # its notes, for a reader
            run_settings.check_prompt(prompt, tokens, params)

    def removed():
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()

    return attempt(read_and_check, seed, mutation, removed)


# ---- tokenizer.model --------------------------------------------------------------------------


def run_tokenizer_model_case(data: bytes, seed: int, folder: Path) -> dict | None:
    """A Meta folder whose tokenizer.model (the packaged one) is mutated anywhere in it."""
    mutated, mutation = mutate(data, seed, len(data))
    where = folder_case(EMBEDDED_CHECKPOINT, "tokenizer.model", mutated, folder / f"case-{seed}")
    return outcome(where, seed, mutation, tokenizer=True)


def hf_folder(folder: Path, small: bool = False) -> Path:
    """The embedded model in Hugging Face's layout (config.json, safetensors, tokenizer.json).
    `small`: no tokenizer.json, and the vocabulary's matrices cut to their first 300 rows, so
    that a case writes half a megabyte, not 33 (the tokenizer is not read for a folder's
    safetensors or config.json; the folder still opens and checks as a model)."""
    from testbeds.hf_folder import save_streaming  # here: it imports transformers (seconds)

    if not small:
        return save_streaming(EMBEDDED_CHECKPOINT, folder / "hf")
    out = save_streaming(EMBEDDED_CHECKPOINT, folder / "hf-small", tokenizer=False)
    config = json.loads((out / "config.json").read_text())
    tensors = load_file(out / "model.safetensors")
    vocabulary = config["vocab_size"]
    rows = {name: t[:SMALL_VOCABULARY] for name, t in tensors.items() if len(t) == vocabulary}
    save_file(tensors | rows, str(out / "model.safetensors"), metadata={"format": "pt"})
    config["vocab_size"] = SMALL_VOCABULARY
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def run_format(kind: str, seeds, folder: Path, hf, base: Path | None = None) -> list[dict]:
    """Every seed's case of one format; the failures. `hf(small)`: a Hugging Face folder
    (`hf_folder`), made at its first use and shared by the formats that mutate it. `base`: a
    GGUF file to mutate instead of the project's own (one made by llama.cpp's converter and
    quantizer, say; a case then parses its whole vocabulary, seconds)."""
    if kind == "gguf":
        data = base.read_bytes() if base else base_file(folder)
        header = metadata_end(base or folder / "base.gguf")
        return [f for seed in seeds if (f := run_case(data, seed, header, folder))]
    if kind == "gguf index":
        data = base.read_bytes() if base else base_file(folder)
        index = tensor_index(base or folder / "base.gguf")
        return [f for seed in seeds if (f := run_index_case(data, seed, index, folder))]
    if kind.startswith("qwen3"):  # its cases in a folder of their own: no name meets Llama's
        cases = folder / kind.replace(" ", "-")
        cases.mkdir(exist_ok=True)
        if kind == "qwen3 gguf":
            data = qwen3_base_file(folder)
            header = metadata_end(folder / "base-qwen3.gguf")
            return [f for seed in seeds if (f := run_case(data, seed, header, cases))]
        base, name = qwen3_folder(folder), kind.removeprefix("qwen3 ")
        return [f for seed in seeds if (f := run_json_case(base, name, seed, cases))]
    if kind == "safetensors":
        base = hf(small=True)
        data = (base / "model.safetensors").read_bytes()
        return [f for seed in seeds if (f := run_safetensors_case(base, data, seed, folder))]
    if kind == "ollama manifest":
        models, manifest, text = ollama_models(folder, base_file(folder))
        return [f for seed in seeds if (f := run_manifest_case(models, manifest, text, seed))]
    if kind == "prompt file":
        tokenizer = tokenizer_setup.load_tokenizer(None)
        params = checkpoints.open_checkpoint(EMBEDDED_CHECKPOINT).params
        return [f for seed in seeds if (f := run_prompt_case(seed, folder, tokenizer, params))]
    if kind == "tokenizer.model":
        data = tokenizer_setup.packaged_tokenizer_model().read_bytes()
        return [f for seed in seeds if (f := run_tokenizer_model_case(data, seed, folder))]
    base = EMBEDDED_CHECKPOINT if kind == "params.json" else hf(small=kind == "config.json")
    return [f for seed in seeds if (f := run_json_case(base, kind, seed, folder))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=int, help="run the one case of this seed")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["gguf"])
    parser.add_argument("--base", type=Path, help="gguf: mutate this GGUF file instead")
    args = parser.parse_args(argv)
    seeds = [args.replay] if args.replay is not None else range(args.seed, args.seed + args.cases)
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        made: dict[bool, Path] = {}

        def hf(small: bool) -> Path:  # one conversion (seconds) for the formats that read it
            if small not in made:
                made[small] = hf_folder(folder, small)
            return made[small]

        for kind in args.format:  # one process: the imports and the folder paid once
            failures = run_format(kind, seeds, folder, hf, args.base)
            failed |= bool(failures)
            print(json.dumps({"format": kind, "cases": len(seeds), "failures": failures}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
