"""llama.cpp as a third implementation: its own converter's GGUF files, read by the notebook,
and its own logits on them, beside the notebook's.

    python -m benchmarks.gguf_parity [--llama-cpp build/llama-cpp] [--scaled]

1. The embedded checkpoint, saved by transformers as a Hugging Face folder
   (testbeds/hf_folder.py), converted to GGUF F32 by llama.cpp's `convert_hf_to_gguf.py`,
   then quantized to Q8_0, Q4_0, Q4_K_M and Q6_K by llama.cpp's `llama_model_quantize` (the
   K-quants need rows that are multiples of 256: where they are not, llama.cpp picks another
   format, and the table says which formats the file holds; the environment of
   benchmarks/quantized_decode.py: llama-cpp-python from the package registry, built from
   source, never in the notebook's requirements). --scaled does the same for a random
   checkpoint with Llama 3.1's scaled RoPE, factor 8, so that rope_freqs is tested too.
2. The notebook's tensors from each file, against Meta's: bit for bit in F32, the largest
   difference in the block formats.
3. The notebook on each file (demos skipped) and llama.cpp on the same file and the same
   token ids: the last position's logits, their largest difference relative to the largest
   logit, and both predictions.
4. Both perplexities on the held-out sentences (generators/heldout.txt, as the notebook's
   learning section reads them): the notebook's `perplexity`, and e^(mean −log p(next token))
   from llama.cpp's logits at every position of the same token ids (log-softmax computed here,
   in float64; each sentence in one batch, as the notebook reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import header, kernel_figures
from benchmarks.quantized_decode import llama_cpp_environment
from plumbing import REPO_DIR, checkpoint_files, checkpoints, model_sizes
from testbeds.hf_folder import save_with_transformers
from testbeds.notebook_kernel import TENSORS_ONLY
from testbeds.presets import PRESETS
from testbeds.random_checkpoint import write_checkpoint

KINDS = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",  # Ollama's default for the 3B and 8B
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
LOGITS = """
import json, math, sys
import llama_cpp
import numpy as np
tokens = json.loads(sys.argv[2])
sequences = json.loads(open(sys.argv[4]).read())
n_ctx = max(64, len(tokens), *map(len, sequences))
llm = llama_cpp.Llama(sys.argv[1], n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True,
                      verbose=False)
llm.eval(tokens)
np.save(sys.argv[3], np.array(llm.scores[len(tokens) - 1], dtype=np.float32))
total, count = 0.0, 0
for sequence in sequences:
    llm.reset()
    llm.eval(sequence)
    logits = np.array(llm.scores[: len(sequence) - 1], dtype=np.float64)
    top = logits.max(axis=1)
    normalizer = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    chosen = logits[np.arange(len(sequence) - 1), sequence[1:]]
    total += float((normalizer - chosen).sum())
    count += len(sequence) - 1
print(json.dumps({"perplexity": math.exp(total / count)}))
"""


def convert(python: Path, source: Path, hf_folder: Path, out: Path) -> dict[str, Path]:
    files = {"F32": out / "model-f32.gguf"}
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
    command = [str(python), str(source / "convert_hf_to_gguf.py"), str(hf_folder)]
    command += ["--outtype", "f32", "--outfile", str(files["F32"])]
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for kind, ftype in KINDS.items():
        files[kind] = out / f"model-{kind.lower()}.gguf"
        code = (
            "import llama_cpp, sys\n"
            "params = llama_cpp.llama_model_quantize_default_params()\n"
            f"params.ftype = llama_cpp.{ftype}\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), "
            "sys.argv[2].encode(), params))\n"
        )
        subprocess.run(
            [str(python), "-c", code, str(files["F32"]), str(files[kind])],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return files


def compare(meta_folder: Path, python: Path, source: Path, work: Path, label: str) -> None:
    hf_folder = save_with_transformers(meta_folder, work / "hf")
    files = convert(python, source, hf_folder, work)
    meta = checkpoints.open_checkpoint(meta_folder).weights
    print(
        f"\n{label}: {model_sizes.n_parameters(checkpoints.read_params(meta_folder)):,} parameters"
    )
    print(
        f"{'file':7} {'holds':24} {'tensors vs Meta':>20} {'notebook':>9} {'llama.cpp':>10} "
        f"{'logits: max |diff| / max |logit|':>34} {'held-out perplexity: notebook':>30} "
        f"{'llama.cpp':>10}"
    )
    for kind, path in files.items():
        weights = checkpoints.open_checkpoint(path).weights
        worst = max(float((weights[n].float() - meta[n].float()).abs().max()) for n in meta)
        exact = all(torch.equal(weights[n].float(), meta[n].float()) for n in meta)
        tensors = "bit for bit" if exact else f"max |diff| {worst:.2e}"
        holds = "/".join(sorted(set(weights.formats.values())))
        settings = {**TENSORS_ONLY, "LLAMA3_CKPT": str(path)}
        run = kernel_figures(settings, "logits_and_perplexity")
        ours = torch.tensor(run["logits"])
        scores, sequences = work / f"llama-cpp-{kind}.npy", work / "heldout.json"
        sequences.write_text(json.dumps(run["heldout"]))
        tokens = json.dumps(run["prompt_tokens"])
        printed = subprocess.run(
            [str(python), "-c", LOGITS, str(path), tokens, str(scores), str(sequences)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        their_perplexity = json.loads(printed.strip().splitlines()[-1])["perplexity"]
        theirs = torch.from_numpy(np.load(scores))
        relative = float((ours - theirs).abs().max() / theirs.abs().max())
        print(
            f"{kind:7} {holds:24} {tensors:>20} {int(ours.argmax()):>9} "
            f"{int(theirs.argmax()):>10} {relative:>34.2e} {run['perplexity']:>30.7g} "
            f"{their_perplexity:>10.7g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-cpp", type=Path, default=REPO_DIR / "build" / "llama-cpp")
    parser.add_argument("--scaled", action="store_true")
    args = parser.parse_args()
    python, source = llama_cpp_environment(args.llama_cpp)
    print(header("llama.cpp's converter and quantizer from llama-cpp-python"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "embedded").mkdir()
        compare(
            checkpoint_files.EMBEDDED_CHECKPOINT,
            python,
            source,
            work / "embedded",
            "the embedded checkpoint",
        )
        if args.scaled:
            meta = write_checkpoint(work / "scaled-meta", dict(PRESETS["gguf-scaled"]), seed=7)
            (work / "scaled").mkdir()
            compare(meta, python, source, work / "scaled", "a random checkpoint, scaled RoPE 8")


if __name__ == "__main__":
    main()
