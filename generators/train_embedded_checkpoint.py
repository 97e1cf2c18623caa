"""Train the tiny Llama 3 that ships in weights/, and write it in Meta's layout.

    python -m generators.train_embedded_checkpoint [--out weights/llama3-tiny-hitchhiker]

What it makes: a 4-layer Llama 3 with the real 128,256-token vocabulary and
Meta's tokenizer, trained from scratch on generators/corpus.txt (a few hundred
short sentences written for this project, one of them the Hitchhiker's line).
It is not Meta's model: it exists so that the notebook runs anywhere with no
download, and so that the notebook's from-scratch "42" is an independent check
of its math — the model is trained with Hugging Face transformers'
`LlamaForCausalLM`, and the notebook only ever sees Meta's file format.

How:
1. Tokenize each line as <|begin_of_text|> line <|end_of_text|> with Llama 3's tokenizer.
2. Build `LlamaForCausalLM` with Llama 3's settings (RMSNorm eps, rope_theta,
   grouped-query attention, untied output) and params.json's FFN size rule.
3. Rows of the embedding and output matrices for tokens the corpus never uses
   start at exactly zero and stay zero (they get no gradient), so the 33 MB file
   compresses to a few hundred kB in git. With those output rows at zero, their
   logits are exactly 0, so the full 128,256-way softmax loss is computed exactly
   from the used rows plus log(number of unused tokens) — no approximation, just
   not multiplying by zeros.
4. Full-batch AdamW, fixed seeds, deterministic algorithms: the same machine and
   torch version give the same bytes.
5. Check with HF's own forward pass that the Hitchhiker's prompt predicts "42"
   with a margin, and that other corpus lines complete correctly.
6. Write consolidated.00.pth (bf16, Meta's key names, [out, in] weights, q/k rows
   permuted back from HF's half-split RoPE layout to Meta's interleaved pairs)
   and params.json with Meta's keys.

Takes about 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

import tokenizer_setup
from plumbing import REPO_DIR, model_sizes, tensor_names
from plumbing.hf_checkpoint import hf_rows_to_meta
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds.presets import PRESETS
from testbeds.transformers_llama import hf_config

PARAMS = PRESETS["embedded"]
FORTY_TWO = 2983
SEED = 42
STEPS = 400
LEARNING_RATE = 3e-3


def meta_state_dict(model: LlamaForCausalLM, params: dict) -> dict[str, torch.Tensor]:
    """The trained weights under Meta's names (the one name map), q/k rows in Meta's order."""
    hf = model.state_dict()
    out = {}
    for name in model_sizes.expected_shapes(params):
        tensor = hf[tensor_names.HUGGING_FACE.from_meta(name)]
        if name.endswith("attention.wq.weight"):
            tensor = hf_rows_to_meta(tensor, params["n_heads"])
        elif name.endswith("attention.wk.weight"):
            tensor = hf_rows_to_meta(tensor, params["n_kv_heads"])
        out[name] = tensor
    # Contiguous bf16 copies, so each tensor is saved as its own storage.
    return {name: t.detach().to(torch.bfloat16).contiguous().clone() for name, t in out.items()}


def corpus_lines() -> list[str]:
    """generators/corpus.txt, one sentence a line, blank lines left out."""
    text = (REPO_DIR / "generators" / "corpus.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def corpus_batch(tokenizer, lines: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """[lines × longest] token ids, and a mask of the positions whose next token is trained."""
    bos = tokenizer.encode_single_token("<|begin_of_text|>")
    eos = tokenizer.encode_single_token("<|end_of_text|>")
    sequences = [[bos, *tokenizer.encode(line), eos] for line in lines]
    longest = max(map(len, sequences))
    ids = torch.full((len(sequences), longest), eos, dtype=torch.long)
    trained = torch.zeros(len(sequences), longest - 1, dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        trained[row, : len(seq) - 1] = True
    return ids, trained


def exact_full_vocab_loss(model, ids, trained, used_ids, n_unused):
    """Mean cross-entropy over all 128,256 tokens, using that unused logits are exactly 0."""
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    logits_used = hidden @ model.lm_head.weight[used_ids].T  # [lines × positions × used]
    log_normalizer = torch.logaddexp(
        torch.logsumexp(logits_used, dim=-1), torch.tensor(math.log(n_unused))
    )
    targets = torch.searchsorted(
        used_ids, ids[:, 1:].contiguous()
    )  # position of each target in used_ids
    target_logits = logits_used.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return ((log_normalizer - target_logits) * trained).sum() / trained.sum()


def train_on_corpus(model, ids, trained, used_ids, steps: int, started: float) -> torch.Tensor:
    """Full-batch AdamW on the corpus, the rows of unused tokens held at zero; the weights then
    rounded to bf16 as the file will hold them. Returns the unused tokens' mask."""
    vocab_size = model.lm_head.weight.shape[0]
    unused = torch.ones(vocab_size, dtype=torch.bool)
    unused[used_ids] = False
    with torch.no_grad():
        model.model.embed_tokens.weight[unused] = 0.0
        model.lm_head.weight[unused] = 0.0
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=0.01, betas=(0.9, 0.98)
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.1
    )
    model.train()
    n_unused = int(unused.sum())
    for step in range(1, steps + 1):
        loss = exact_full_vocab_loss(model, ids, trained, used_ids, n_unused)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  ({time.time() - started:.0f} s)")
    model.eval()
    # Round to bf16 exactly as the file will hold it, then check with HF's own forward pass.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
    return unused


def next_token(model, tokenizer, prompt: str) -> tuple[int, float]:
    """HF's own full forward pass: greedy next token and its logit margin over the runner-up."""
    ids = [tokenizer.encode_single_token("<|begin_of_text|>"), *tokenizer.encode(prompt)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    top2 = logits.topk(2)
    return int(top2.indices[0]), float(top2.values[0] - top2.values[1])


def completion_checks(lines: list[str]) -> list[tuple[str, str]]:
    """(prompt, expected next text) pairs: each corpus line without its last word."""
    pairs = []
    for line in lines:
        head, last = line.rsplit(" ", 1)
        pairs.append((head, " " + last) if not last.isdigit() else (head + " ", last))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_DIR / "weights" / "llama3-tiny-hitchhiker")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    started = time.time()

    tokenizer = tokenizer_setup.load_tokenizer(None)
    lines = corpus_lines()
    ids, trained = corpus_batch(tokenizer, lines)
    used_ids = torch.unique(ids)
    assert tokenizer.encode(DEFAULT_PROMPT + "42")[-1] == FORTY_TWO
    print(
        f"corpus: {len(lines)} lines, {int(trained.sum())} trained positions, {len(used_ids)} "
        "distinct tokens"
    )

    model = LlamaForCausalLM(hf_config(PARAMS))
    unused = train_on_corpus(model, ids, trained, used_ids, args.steps, started)
    assert bool((model.lm_head.weight[unused] == 0).all()) and bool(
        (model.model.embed_tokens.weight[unused] == 0).all()
    )
    token, margin = next_token(model, tokenizer, DEFAULT_PROMPT)
    print(f"canonical prompt -> {token} {tokenizer.decode([token])!r}, logit margin {margin:.2f}")
    if token != FORTY_TWO or margin < 2.0:
        raise SystemExit(
            "training did not make '42' the clear next token; not writing the checkpoint"
        )
    checks = completion_checks(lines[1:])
    correct = 0
    for prompt, expected in checks:
        got, _ = next_token(model, tokenizer, prompt)
        correct += got == tokenizer.encode(expected)[0]
    print(f"corpus lines whose last word is predicted from the rest: {correct} / {len(checks)}")

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(meta_state_dict(model, PARAMS), args.out / "consolidated.00.pth")
    (args.out / "params.json").write_text(json.dumps(PARAMS, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
