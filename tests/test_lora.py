"""The learning section's LoRA is Hugging Face peft's: the same loss and gradients, the same
adapters after the same training steps, and a bad rank refused in one sentence.

Three kernels measure the notebook's side with its own `low_rank_adapters`, `weights_from`,
`token_losses` and `teach` (`lora`, below: rank 4, alpha 16): the
embedded checkpoint's shared run and two random checkpoints' parity runs, one with grouped
queries and an untied output matrix, one with a tied output (tests/support/parity_runs.py:
LORA_CHECKPOINTS). The reference is peft's `get_peft_model` on transformers' LlamaForCausalLM
loaded from the same checkpoint, `LoraConfig(r=4, lora_alpha=16, lora_dropout=0)` on the seven
matrices of every layer and on `lm_head` unless it is tied, given the notebook's A and B (B's
rows of wq and wk in Hugging Face's order, as the weights' are; A reads the input, in the same
order for both). Everything in float32; every tensor is compared as ‖ours − peft's‖ / ‖peft's‖.

- With B random and nonzero (at B = 0, A's gradient is zero): the loss, and the gradient of
  every A and B, within 1e-5.
- `teach(new_fact, steps=3, rank=4)`, step by step: at each step's start, peft's loss and
  gradients from teach's adapters within 1e-5; a fresh fused Adam fed teach's gradients makes
  teach's steps, bit for bit.
- peft trained on its own by the same fused Adam, from the same start, on the same loss (the
  mean over both sentences' positions): its final A and B within 1e-2, its losses within 1e-4
  of teach's (TRAINING_TOLERANCE says why these are wider).
- A rank that is not a whole number from 1 to the smallest side of an adapted matrix is
  refused with a SetupError of one line naming that range; that smallest side is accepted.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from plumbing import model_sizes
from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support import reference_models
from tests.support.notebook_values import read_in_shared_run
from tests.support.parity_runs import GENERATING, TIED

pytestmark = pytest.mark.slow  # reads the notebook's kernels and loads reference models

# the notebook's runs that measure LoRA: the embedded model, grouped queries with an untied
# output matrix, and a tied output matrix (which gets no adapter)
CHECKPOINTS = ["embedded", GENERATING, TIED]
ALPHA = 16  # low_rank_adapters' and teach's default
RANK = 4  # the adapters' rank in the kernels' measurements
LAYER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
META_NAME = {hf: meta for meta, hf in reference_models.HF_LAYER_KEYS.items()}
# One forward and backward pass from the same numbers, in float32 on both sides, summed in
# different orders: float32 rounding, measured at most 1.8e-6 (the losses 2.6e-7).
TOLERANCE = 1e-5
# Trained apart, the two drift: Adam moves every number by about the learning rate times
# m / (√v + 1e-8), whatever the size of its gradient, so a number whose gradient is within
# float32 rounding of zero can be stepped either way, by up to 2 × 5e-3 a step. On the tied
# checkpoint one number of the 2,048 of layer 1's w2 A (gradient 2e-8 against the tensor's
# largest 0.49) went the other way: 1.9e-3 of that A, 3e-4 of its B; at most 5.5e-5 elsewhere,
# the losses 4.3e-6. The step-by-step test shows that the gradients and the optimizer agree
# along the way; this one bounds the drift. A wrong scale, row order, loss or learning rate
# moves some adapter by 2e-1 or more; a subtler change (Adam's β2 0.99 instead of 0.999,
# 2e-3 here) shows in the losses and in the tests above.
TRAINING_TOLERANCE = 1e-2
TRAINING_LOSS_TOLERANCE = 1e-4


def norm_relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """‖ours − theirs‖ / ‖theirs‖: one number per tensor, scale-free."""
    ours, theirs = ours.detach().float(), theirs.detach().float()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-30))


def to_hf_rows(name: str, b: torch.Tensor, params: dict) -> torch.Tensor:
    """B (or its gradient) of the matrix `name`, its rows in Hugging Face's order: wq's and wk's
    rows are permuted as the weights are (B's rows are the matrix's output rows)."""
    if name.endswith("attention.wq.weight"):
        return reference_models.meta_rows_to_hf(b, params["n_heads"])
    if name.endswith("attention.wk.weight"):
        return reference_models.meta_rows_to_hf(b, model_sizes.filled(params)["n_kv_heads"])
    return b


def peft_reference(folder, rank: int):
    """peft's LoRA of this rank on transformers' model of the checkpoint in `folder`: the model,
    the checkpoint's params, and peft's LoRA layers by the Meta name of the matrix each adapts."""
    params = json.loads((folder / "params.json").read_text())
    base = reference_models.hf_model(folder, params, torch.float32)  # its own: peft changes it
    tied = base.config.tie_word_embeddings
    config = LoraConfig(
        r=rank,
        lora_alpha=ALPHA,
        target_modules=LAYER_TARGETS + ([] if tied else ["lm_head"]),
        lora_dropout=0.0,
    )
    model = get_peft_model(base, config)
    layers = {}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            if name == "lm_head":
                layers["output.weight"] = module
            else:
                index, inside = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name).groups()
                layers[f"layers.{index}.{META_NAME[inside + '.weight']}"] = module
    return model, params, layers


def set_adapters(layers: dict, adapters: dict, params: dict) -> list[torch.Tensor]:
    """peft's A and B set to the notebook's, gradients cleared; their tensors in the notebook's
    order, A then B of each matrix (teach's order for its optimizer)."""
    assert set(adapters) == set(layers), "the notebook adapts other matrices than peft"
    numbers = []
    with torch.no_grad():
        for name, values in adapters.items():
            a, b = layers[name].lora_A["default"].weight, layers[name].lora_B["default"].weight
            a.copy_(values["a"])
            b.copy_(to_hf_rows(name, values["b"], params))
            a.grad = b.grad = None
            numbers += [a, b]
    return numbers


def peft_values(layers: dict, grads: bool = False) -> dict:
    """peft's A and B of every adapted matrix (or their gradients), by Meta name."""
    result = {}
    for name, layer in layers.items():
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        result[name] = {"a": a.grad, "b": b.grad} if grads else {"a": a, "b": b}
    return result


def differences(ours: dict, theirs: dict, params: dict) -> dict[str, float]:
    """norm_relative of every A and B (or gradient), ours' B rows put in Hugging Face's order."""
    result = {}
    for name, values in ours.items():
        result[f"{name} A"] = norm_relative(values["a"], theirs[name]["a"])
        b = to_hf_rows(name, values["b"], params)
        result[f"{name} B"] = norm_relative(b, theirs[name]["b"])
    return result


def worst_of(measured: dict[str, float]) -> tuple[str, float]:
    worst = max(measured, key=measured.get)
    return worst, measured[worst]


def mean_loss(model, batch: list[list[int]]) -> torch.Tensor:
    """The mean −log p(next token) over every predicted position of every sequence: each
    sequence's mean loss (labels = its tokens) weighted by its number of positions."""
    total = sum(
        model(torch.tensor([tokens]), labels=torch.tensor([tokens]), use_cache=False).loss
        * (len(tokens) - 1)
        for tokens in batch
    )
    return total / sum(len(tokens) - 1 for tokens in batch)


@pytest.fixture(scope="module", params=CHECKPOINTS)
def checkpoint(request):
    return request.param


@pytest.fixture(scope="module")
def ours(runs, checkpoint):
    """What the checkpoint's kernel measured (`lora` below)."""
    return torch.load(runs.notebook(checkpoint, "canonical-17")["files"]["lora"], weights_only=True)


@pytest.fixture(scope="module")
def peft_lora(runs, checkpoint, ours):
    return peft_reference(runs.checkpoints[checkpoint], ours["rank"])


def test_adapters_are_on_the_matrices_peft_adapts(ours, peft_lora):
    model, params, layers = peft_lora
    adapters = ours["gradients"]["adapters"]
    tied = model.base_model.model.config.tie_word_embeddings
    assert len(adapters) == 7 * params["n_layers"] + (0 if tied else 1)
    assert set(adapters) == set(layers)
    for name, values in adapters.items():
        base = layers[name].get_base_layer()
        assert values["a"].shape == (ours["rank"], base.in_features), name
        assert values["b"].shape == (base.out_features, ours["rank"]), name
    assert set(ours["gradients"]["scales"].values()) == {ALPHA / ours["rank"]}


def test_loss_and_gradients_equal_peft(ours, peft_lora):
    model, params, layers = peft_lora
    measured = ours["gradients"]
    assert all(values["b"].abs().min() > 0 for values in measured["adapters"].values())
    set_adapters(layers, measured["adapters"], params)
    with torch.enable_grad():
        loss = mean_loss(model, [measured["tokens"]])
        loss.backward()
    theirs = loss.item()
    grads = peft_values(layers, grads=True)
    assert all(g.abs().max() > 0 for values in grads.values() for g in values.values())
    found = {"loss": abs(measured["loss"] - theirs) / theirs}
    found |= differences(measured["grads"], grads, params)
    worst, difference = worst_of(found)
    assert difference <= TOLERANCE, f"{worst}: {difference:.2e} relative"


def test_teach_starts_from_low_rank_adapters_after_the_same_seed(ours):
    training = ours["training"]
    assert len(training["teach_started"]) == 1, "teach did not make its adapters once"
    started, recorded = training["teach_started"][0], training["recorded_start"]
    assert list(started) == list(recorded)
    for name, values in recorded.items():
        assert torch.equal(started[name]["a"], values["a"]), name
        assert torch.equal(started[name]["b"], values["b"]), name
        assert not values["b"].any(), f"{name}: B does not start at zero"
        assert values["a"].any(), f"{name}: A starts at zero"


def test_teach_trains_the_adapters_with_fused_adam(ours):
    training = ours["training"]
    optimizers = training["optimizers"]
    assert len(optimizers) == len(training["steps"]) == len(training["losses"]) == 3
    learning_rate = optimizers[0]["settings"]["lr"]
    number = torch.zeros(1, requires_grad=True)
    adam = torch.optim.Adam([number], lr=learning_rate, fused=True).defaults
    for optimizer in optimizers:
        assert optimizer["type"] == "Adam"
        assert optimizer["holds_the_adapters"], "teach's optimizer trains other tensors"
        assert optimizer["settings"] == adam


def test_each_step_of_teach_equals_peft(ours, peft_lora):
    """Along teach's own path: at each step's start, peft's loss and gradients from the same
    adapters; and a fresh fused Adam fed teach's gradients, teach's steps."""
    model, params, layers = peft_lora
    training = ours["training"]
    steps = training["steps"]
    starts = [training["teach_started"][0]] + [step["after"] for step in steps[:-1]]
    found = {}
    for index, (start, step) in enumerate(zip(starts, steps, strict=True)):
        set_adapters(layers, start, params)
        with torch.enable_grad():
            loss = mean_loss(model, training["batch"])
            loss.backward()
        theirs = loss.item()
        found[f"step {index}: loss"] = abs(training["losses"][index] - theirs) / theirs
        grads = differences(step["grads"], peft_values(layers, grads=True), params)
        found |= {f"step {index}: {key} grad": value for key, value in grads.items()}
    worst, difference = worst_of(found)
    assert difference <= TOLERANCE, f"{worst}: {difference:.2e} relative"
    numbers = {
        name: {key: value.clone().requires_grad_() for key, value in values.items()}
        for name, values in starts[0].items()
    }
    adam = torch.optim.Adam(
        [number for values in numbers.values() for number in values.values()],
        lr=training["optimizers"][0]["settings"]["lr"],
        fused=True,
    )
    for index, step in enumerate(steps):
        for name, values in numbers.items():
            for key, number in values.items():
                number.grad = step["grads"][name][key].clone()
        adam.step()
        for name, values in numbers.items():
            for key, number in values.items():
                same = torch.equal(number.detach(), step["after"][name][key])
                assert same, f"step {index}: {name} {key.upper()} is not Adam's step"


def test_teach_equals_peft_trained_alike(ours, peft_lora):
    """peft trained on its own from the same start, as teach trains: the ends and the losses."""
    model, params, layers = peft_lora
    training = ours["training"]
    numbers = set_adapters(layers, training["recorded_start"], params)
    learning_rate = training["optimizers"][0]["settings"]["lr"]
    optimizer = torch.optim.Adam(numbers, lr=learning_rate, fused=True)
    losses = []
    with torch.enable_grad():
        for _ in training["steps"]:
            loss = mean_loss(model, training["batch"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    ends = differences(training["steps"][-1]["after"], peft_values(layers), params)
    worst, difference = worst_of(ends)
    assert difference <= TRAINING_TOLERANCE, f"{worst}: {difference:.2e} relative"
    assert training["losses"] == pytest.approx(losses, rel=TRAINING_LOSS_TOLERANCE)
    assert losses[-1] < losses[0]  # the steps did something


def test_a_bad_rank_is_one_sentence_naming_the_range(ours, peft_lora):
    _, _, layers = peft_lora
    smallest = min(
        min(layer.get_base_layer().in_features, layer.get_base_layer().out_features)
        for layer in layers.values()
    )
    bad_ranks = ours["bad_ranks"]
    assert bad_ranks["smallest"] == smallest
    expected = [repr(rank) for rank in (0, -1, 2.5, "8", smallest + 1)]
    assert list(bad_ranks["refused"]) == expected
    for rank, refused in bad_ranks["refused"].items():
        assert refused["raised"] is not None, f"rank={rank} was accepted"
        assert refused["setup_error"], f"rank={rank}: {refused['raised']}, not a SetupError"
        message = refused["message"]
        assert "\n" not in message and message.strip() == message, message
        assert rank in message, message
        assert {"1", str(smallest)} <= set(re.findall(r"\d+", message)), message
    assert set(bad_ranks["at_smallest"]) == set(layers)  # the largest rank works
    for name, (a_shape, b_shape) in bad_ranks["at_smallest"].items():
        base = layers[name].get_base_layer()
        assert (a_shape, b_shape) == ((smallest, base.in_features), (base.out_features, smallest))


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def _adapter_values(adapters: dict) -> dict:
    """Each adapter's A and B, detached copies on the CPU, by the adapted matrix's name."""
    return {
        name: {"a": adapted.a.detach().cpu().clone(), "b": adapted.b.detach().cpu().clone()}
        for name, adapted in adapters.items()
    }


@in_kernel(uses=(_adapter_values,))
def lora(nb: KernelGlobals, rank: int, path: str) -> None:
    """The learning section's LoRA, through its own `low_rank_adapters`, `weights_from`,
    `token_losses` and `teach`:

    - "gradients": adapters of `rank` with B set to random nonzero values (at B = 0, A's
      gradient is zero), the Hitchhiker sentence's mean loss through them, and every A's and
      B's gradient;
    - "training": `teach(new_fact, steps=3, rank=rank)` after `torch.manual_seed(1)`: the
      adapters it made (watched as `teach` makes them) and `low_rank_adapters(rank)`'s after
      the same seed; at each step, read by torch's optimizer hooks, every A's and B's gradient
      and their values after the step, whether the optimizer holds exactly the adapters, and
      its type and settings; the losses it returned; the token ids it trained on;
    - "bad_ranks": what `low_rank_adapters` raised for each rank it must refuse, and the
      adapters' shapes at the largest rank it must accept, the smallest side of a matrix.
    """
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    from plumbing import friendly_errors

    low_rank_adapters = nb["low_rank_adapters"]
    torch.manual_seed(0)
    adapters = low_rank_adapters(rank)
    with torch.no_grad():
        for adapted in adapters.values():
            adapted.b.copy_(0.02 * torch.randn(adapted.b.shape))
    with nb["weights_from"](adapters), torch.enable_grad():
        loss = nb["token_losses"](nb["hitchhiker_tokens"]).mean()
        loss.backward()
    gradients = {
        "tokens": nb["hitchhiker_tokens"],
        "loss": float(loss),
        "scales": {name: adapted.scale for name, adapted in adapters.items()},
        "adapters": _adapter_values(adapters),
        "grads": {
            name: {"a": adapted.a.grad.cpu(), "b": adapted.b.grad.cpu()}
            for name, adapted in adapters.items()
        },
    }

    torch.manual_seed(1)
    recorded = _adapter_values(low_rank_adapters(rank))
    made, started, steps, optimizers = [], [], [], []  # what teach made and did, watched

    def low_rank_adapters_for_teach(*args, **kwargs):
        made.append(low_rank_adapters(*args, **kwargs))
        started.append(_adapter_values(made[-1]))  # before teach's first step moves them
        return made[-1]

    def before_step(optimizer, args, kwargs):
        trained = [number for group in optimizer.param_groups for number in group["params"]]
        adapted = [n for adapters in made for a in adapters.values() for n in (a.a, a.b)]
        optimizers.append(
            {
                "type": type(optimizer).__name__,
                "settings": dict(optimizer.defaults),
                "holds_the_adapters": len(trained) == len(adapted)
                and {id(n) for n in trained} == {id(n) for n in adapted},
            }
        )
        grads = {
            name: {"a": adapted.a.grad.cpu().clone(), "b": adapted.b.grad.cpu().clone()}
            for name, adapted in made[-1].items()
        }
        steps.append({"grads": grads})

    def after_step(optimizer, args, kwargs):
        steps[-1]["after"] = _adapter_values(made[-1])

    teach = nb["teach"]
    nb["low_rank_adapters"] = low_rank_adapters_for_teach
    hooks = [
        register_optimizer_step_pre_hook(before_step),
        register_optimizer_step_post_hook(after_step),
    ]
    torch.manual_seed(1)
    try:
        _, losses = teach(nb["new_fact"], steps=3, rank=rank)
    finally:
        nb["low_rank_adapters"] = low_rank_adapters
        for hook in hooks:
            hook.remove()
    begin, tokenizer = nb["begin"], nb["tokenizer"]
    training = {
        "recorded_start": recorded,
        "teach_started": started,
        "steps": steps,
        "optimizers": optimizers,
        "losses": losses,
        "batch": [begin + tokenizer.encode(text, disallowed_special=()) for text in nb["new_fact"]],
    }

    smallest = min(min(adapted.b.shape[0], adapted.a.shape[1]) for adapted in adapters.values())
    refused = {}
    for bad in (0, -1, 2.5, "8", smallest + 1):
        try:
            low_rank_adapters(bad)
            refused[repr(bad)] = {"raised": None}
        except Exception as error:  # which exception it is, the test checks
            refused[repr(bad)] = {
                "raised": type(error).__name__,
                "setup_error": isinstance(error, friendly_errors.SetupError),
                "message": str(error),
            }
    at_smallest = {
        name: (tuple(adapted.a.shape), tuple(adapted.b.shape))
        for name, adapted in low_rank_adapters(smallest).items()
    }
    torch.save(
        {
            "rank": rank,
            "gradients": gradients,
            "training": training,
            "bad_ranks": {"smallest": smallest, "refused": refused, "at_smallest": at_smallest},
        },
        path,
    )


for run in CHECKPOINTS:
    read_in_shared_run(run, lora, RANK)
