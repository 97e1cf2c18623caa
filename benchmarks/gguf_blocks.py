"""The 8B shape from a Q4_0 GGUF file, as Ollama's `llama3:8b` stores it: setup and the notebook.

    python -m benchmarks.gguf_blocks [--repeat 1]

1. Weights: an 8B-shaped GGUF file of random Q4_0 blocks (any 18 bytes are a valid block;
   each scale is set to a float16 near 0.004, so that the weights spread like a trained
   model's, about ±0.03), the norms in F32 at 1, and Llama 3's vocabulary in the metadata,
   written once to build/checkpoints/llama3-8b-q4_0-random.gguf (4.7 GB, about a minute).
2. Setup, in this process, step by step as the setup cell takes them: open the file
   (`open_checkpoint`), the tokenizer from its vocabulary, the settings, and `weight`, whose
   Q4_0 matrices go to PyTorch's int4 kernel as the file holds them (`from_file_blocks`).
3. The notebook, in a fresh process (`make run`'s runner, demos skipped at this size), its
   peak anonymous memory sampled: the whole run, and its slowest cells.

Prints the date and CPU, each figure, and the issue's targets (#47: setup ≤ 15 s, the
17-token forward pass ≤ 3 s, peak anonymous memory ≤ 6 GB), met or missed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import gguf
import numpy as np

import tokenizer_setup
from benchmarks.common import DATA, header
from benchmarks.notebook_runtime import run_once
from plumbing import (
    REPO_DIR,
    checkpoint_files,
    checkpoints,
    model_sizes,
    release_facts,
    run_settings,
)
from testbeds.gguf_writer import gguf_name, metadata_writer, vocabulary_text

FILE = DATA / "llama3-8b-q4_0-random.gguf"
TARGET_SETUP_S, TARGET_FORWARD_S, TARGET_ANON_GB = 15.0, 3.0, 6.0
Q4_0 = gguf.GGMLQuantizationType.Q4_0


def write_file() -> None:
    params = release_facts.LLAMA3_8B_PARAMS
    sizes = model_sizes.filled(params)
    embedded = checkpoints.open_checkpoint(checkpoint_files.EMBEDDED_CHECKPOINT)
    tokens = vocabulary_text(tokenizer_setup.load_tokenizer(embedded.tokenizer_source))
    writer = metadata_writer(FILE, sizes, ("gpt2", tokens))
    generator = np.random.default_rng(8)
    for name, shape in model_sizes.expected_shapes(params).items():
        if len(shape) == 1:
            writer.add_tensor(gguf_name(name), np.ones(shape, dtype=np.float32))
            continue
        rows, columns = shape
        blocks = generator.integers(0, 256, (rows, columns // 32, 18), dtype=np.uint8)
        scales = generator.uniform(0.003, 0.005, (rows, columns // 32)).astype(np.float16)
        blocks[..., :2] = scales.view(np.uint8).reshape(rows, columns // 32, 2)
        writer.add_tensor(gguf_name(name), blocks.reshape(rows, -1), raw_dtype=Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def setup_steps() -> dict[str, float]:
    """The setup cell's steps on the file, each timed (seconds)."""
    times, started = {}, time.perf_counter()
    checkpoint = checkpoints.open_checkpoint(FILE)
    times["open the file"] = time.perf_counter() - started
    started = time.perf_counter()
    tokenizer = tokenizer_setup.load_tokenizer(checkpoint.tokenizer_source)
    times["the tokenizer"] = time.perf_counter() - started
    started = time.perf_counter()
    settings = run_settings.decide(FILE, checkpoint.params, tokenizer, checkpoint.weights)
    times["the settings"] = time.perf_counter() - started
    started = time.perf_counter()
    settings.weight_reader(checkpoint.weights)
    times["weight: Q4_0 to the int4 kernel"] = time.perf_counter() - started
    print("   ", settings.summary().splitlines()[-2])  # quantized: what the route took
    return times


def notebook_run() -> tuple[float, float, list[tuple[float, str]]]:
    """The whole notebook in a fresh process: seconds, peak anonymous GB, its cells' times."""
    out = REPO_DIR / "build" / "benchmark-gguf-run.ipynb"
    elapsed, peak_gb, result = run_once(out, {**os.environ, "LLAMA3_CKPT": str(FILE)})
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    cells = [
        (float(match[1]), match[2])
        for match in re.finditer(r"cell +\d+ +([\d.]+) s  (.*)", result.stdout)
    ]
    return elapsed, peak_gb, cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not FILE.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_file()
        print(
            f"wrote {FILE} ({FILE.stat().st_size / 1e9:.1f} GB) in "
            f"{time.perf_counter() - started:.0f} s"
        )
    print(header("Q4_0 GGUF of the 8B shape, random blocks"))
    setup = setup_steps()
    for step, seconds in setup.items():
        print(f"  setup: {step:34} {seconds:6.2f} s")
    total_setup = sum(setup.values())
    for run in range(args.repeat):
        elapsed, peak_gb, cells = notebook_run()
        print(f"notebook run {run + 1}: {elapsed:.1f} s, peak anonymous memory {peak_gb:.2f} GB")
        for seconds, first_line in sorted(cells, reverse=True)[:6]:
            print(f"  {seconds:6.2f} s  {first_line}")
    forward = next((s for s, line in cells if line.startswith("stream = token_embeddings")), None)
    print(
        f"setup {total_setup:.1f} s: target ≤ {TARGET_SETUP_S:.0f} s "
        f"{'met' if total_setup <= TARGET_SETUP_S else 'missed'}"
    )
    if forward is not None:
        print(
            f"every layer on the 17-token prompt (a forward pass) {forward:.2f} s: target ≤ "
            f"{TARGET_FORWARD_S:.0f} s {'met' if forward <= TARGET_FORWARD_S else 'missed'}"
        )
    print(
        f"peak anonymous memory {peak_gb:.2f} GB: target ≤ {TARGET_ANON_GB:.0f} GB "
        f"{'met' if peak_gb <= TARGET_ANON_GB else 'missed'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
