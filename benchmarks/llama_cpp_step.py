"""One decode step of llama.cpp on a GGUF file: run by benchmarks/quantized_decode.py in the
environment where it installed llama-cpp-python (not the notebook's).

    python benchmarks/llama_cpp_step.py MODEL.gguf TOKENS_JSON [--steps 8] [--threads 2]
                                        [--batch N]

Evaluates the prompt's tokens (given as ids: the same ones the notebook reads), then one
token at a time, and prints JSON: the prefill's seconds and each decode step's.
"""

from __future__ import annotations

import argparse
import json
import time

import llama_cpp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokens")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, help="tokens a batch (default: the whole prompt)")
    args = parser.parse_args()
    tokens = json.loads(args.tokens)
    llm = llama_cpp.Llama(
        args.model,
        n_ctx=len(tokens) + args.steps + 8,
        n_batch=args.batch or len(tokens),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    prefills, steps = [], []
    for _ in range(args.repeats):
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens)
        prefills.append(time.perf_counter() - started)
        token = tokens[-1]
        for _ in range(args.steps):
            started = time.perf_counter()
            llm.eval([token])
            steps.append(time.perf_counter() - started)
    print(json.dumps({"prefill": min(prefills), "steps": steps}))


if __name__ == "__main__":
    main()
