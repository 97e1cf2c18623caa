"""Train the tiny Llama 4 that ships in weights/, and write it in the layout Meta's code loads.

    python -m generators.train_llama4_checkpoint [--out weights/llama4-tiny-hitchhiker]

What it makes: testbeds.llama4_models.TINY, a 4-layer Llama 4 text model with Llama 4's
202,048-token vocabulary and tokenizer, trained from scratch on generators/corpus.txt as the
embedded Llama 3 is (generators/train_embedded_checkpoint.py: the same corpus, loss, optimizer
and checks), with transformers' `Llama4ForCausalLM`. The notebook's last section reads only the
written files: params.json with Meta's Llama 4 keys and consolidated.00.pth under the names of
Meta's reference `Transformer` (llama_models/llama4/model.py), in bfloat16.

Takes about 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import Llama4ForCausalLM

import tokenizer_setup
from generators.train_embedded_checkpoint import (
    SEED,
    STEPS,
    completion_checks,
    corpus_batch,
    corpus_lines,
    next_token,
    train_on_corpus,
)
from plumbing import REPO_DIR
from plumbing.checkpoint_files import TokenizerSource
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds.llama4_models import TINY, hf_config, meta_from_hf

OUT = REPO_DIR / "weights" / "llama4-tiny-hitchhiker"


def llama4_tokenizer():
    """Llama 4's tokenizer, from the tokenizer.model in Meta's llama-models package."""
    path = tokenizer_setup.packaged_tokenizer_model("llama4")
    return tokenizer_setup.load_tokenizer(TokenizerSource("tokenizer.model", path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    started = time.time()

    tokenizer = llama4_tokenizer()
    forty_two = tokenizer.encode(DEFAULT_PROMPT + "42")[-1]
    assert tokenizer.decode([forty_two]) == "42"
    lines = corpus_lines()
    ids, trained = corpus_batch(tokenizer, lines)
    used_ids = torch.unique(ids)
    print(
        f"corpus: {len(lines)} lines, {int(trained.sum())} trained positions, {len(used_ids)} "
        f"distinct tokens; '42' is token {forty_two}"
    )

    begin, end = tokenizer.begin_of_text[0], tokenizer.end_of_text
    model = Llama4ForCausalLM(hf_config(TINY, bos=begin, eos=end)).float()
    train_on_corpus(model, ids, trained, used_ids, args.steps, started)
    with torch.no_grad():
        prompt_ids = tokenizer.begin_of_text + tokenizer.encode(DEFAULT_PROMPT)
        probabilities = model(torch.tensor([prompt_ids])).logits[0, -1].float().softmax(-1)
    token, margin = next_token(model, tokenizer, DEFAULT_PROMPT)
    print(
        f"canonical prompt -> {token} {tokenizer.decode([token])!r}, logit margin {margin:.2f}, "
        f"p = {float(probabilities[forty_two]):.3f}"
    )
    if token != forty_two or float(probabilities[forty_two]) < 0.9:
        raise SystemExit("training did not make '42' likely (p >= 0.9); not writing it")
    checks = completion_checks(lines[1:])
    correct = sum(
        next_token(model, tokenizer, prompt)[0] == tokenizer.encode(expected)[0]
        for prompt, expected in checks
    )
    print(f"corpus lines whose last word is predicted from the rest: {correct} / {len(checks)}")

    tensors = meta_from_hf(model.state_dict(), TINY)
    tensors = {name: t.to(torch.bfloat16).contiguous().clone() for name, t in tensors.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, args.out / "consolidated.00.pth")
    (args.out / "params.json").write_text(json.dumps(TINY, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
