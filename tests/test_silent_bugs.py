"""The section "When it goes quietly wrong": each bug's damage is computed, not typed; each
broken line is the bug it is named for; every function comes back; and the scaling figure
holds the notebook's own scores.

All read from the shared embedded run (`embedded_run`), whose kernel measures the section
again with its own functions (`silent_bugs`, below).
"""

from __future__ import annotations

import pytest
import torch

from testbeds.notebook_kernel import KernelGlobals, in_kernel
from tests.support.notebook_values import cell_text, read_in_shared_run

pytestmark = pytest.mark.slow  # reads the shared kernel run

WINDOWS = (512, 8192, 4 * 8192)  # distances up to 1/16, 1 and 4 times the original context


@pytest.fixture(scope="module")
def section(embedded_run):
    return torch.load(embedded_run["files"]["silent_bugs"], weights_only=True)


def test_each_damage_is_measured_again_to_the_bit(section, embedded_run):
    printed, again = section["printed"], section["again"]
    assert set(again) <= set(printed)
    for bug, measured in again.items():
        for key, value in measured.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, printed[bug][key]), (bug, key)
            else:
                assert value == printed[bug][key], (bug, key)
    table = cell_text(embedded_run["notebook"], "bugs-measure-every")
    for bug, measured in printed.items():
        line = next(line for line in table.splitlines() if line.startswith(bug))
        assert f"{measured['p_answer']:9.3f}" in line, line
        if "top1_agreement" in measured:
            assert f"{measured['top1_agreement']:12.0%}" in line, line
            assert f"{measured['perplexity']:10.4g}" in line, line
    assert printed["(none)"]["per_position"].abs().max() == 0  # the correct run against itself
    assert {"no <|begin_of_text|>", "no trailing space"} <= set(printed)


def test_each_broken_line_is_the_bug_it_is_named_for(section):
    assert section["rope_bug_vs_half_split"] <= 1e-6  # Hugging Face's pairing, exactly
    assert section["kv_bug_vs_h_mod_kv"] <= 1e-6  # query head h reads key/value head h % kv
    assert 1 < section["n_kv_heads"] < section["n_heads"]  # else that bug would change nothing


def test_every_broken_function_is_the_original_again(section):
    assert section["restored"] and all(section["restored"].values()), section["restored"]


def test_rope_pairing_is_exact_at_position_0_only(section):
    rope = section["printed"]["RoPE pairs (i, i + head_dim/2)"]["per_position"]
    assert rope[0] == 0 and rope[1:].min() > 0


def test_the_scaling_figure_holds_the_notebooks_own_scores(section):
    figure, picked = section["figure"], section["picked"]
    assert figure["distances"][-1] >= 4 * 8192 - 64  # past the original context
    for label in ("unscaled", "scaled"):
        at_picked = figure[label][picked].tolist()
        assert at_picked == pytest.approx(section["one_at_a_time"][label], rel=1e-5, abs=1e-6)
    difference = (figure["scaled"] - figure["unscaled"]).abs() / figure["unscaled"].abs().max()
    assert torch.equal(difference, figure["difference"])
    # together at first, then apart as the distance grows: the largest difference up to 512,
    # 8,192 and 32,768 positions grows, and the first is a small part of the last (the query
    # and key are <|begin_of_text|>'s, in every prompt: measured 0.10, 0.48, 0.74)
    largest = [figure["difference"][figure["distances"] <= limit].max() for limit in WINDOWS]
    assert largest[0] < largest[1] < largest[2]
    assert largest[0] < 0.2 * largest[2]


def test_missing_scaling_shows_on_the_logits_past_the_context(section):
    # a sentence, then the question `gap` positions later, with and without the scaling: the
    # question's logits nearly agree when the sentence is near, and part past 8,192 positions
    apart = section["on_logits"]
    assert min(apart) == 0 and max(apart) > 8192
    far = [value for gap, value in apart.items() if gap >= 8192]
    assert apart[0] < 0.01 and min(far) > 10 * apart[0], apart


# In the notebook's kernel, after its last cell (sent there as source:
# testbeds/notebook_kernel.py).


@in_kernel
def silent_bugs(nb: KernelGlobals, path: str) -> None:
    """The section "When it goes quietly wrong", measured again in its kernel: each bug's
    damage recomputed with the section's own functions; whether every function it broke is
    the original again; whether each broken line does what the section says (RoPE pairing:
    Hugging Face's `rope_rotate_half`, from the layouts section; key/value heads: head h reads
    h % n_kv_heads); and the scaling figure's scores at a few distances, one at a time."""
    import inspect

    bugs, measure = nb["silent_bugs"], nb["measure"]
    correct = nb["logits_and_streams"](nb["bug_input"])
    again = {"(none)": measure(correct, nb["prompt_tokens"], nb["bug_input"])}
    for bug, lines in bugs.items():
        with nb["with_bug"](lines):
            again[bug] = measure(correct, nb["prompt_tokens"], nb["bug_input"])
    restored = {}
    for lines in bugs.values():
        for name, (right, wrong) in lines.items():
            function = nb.namespace[name]  # a function the section names itself
            source = inspect.getsource(function)
            restored[name] = (
                function.__code__.co_filename != "<string>"
                and right in source
                and wrong not in source
            )
    x = torch.randn(3, 5, nb["head_dim"], generator=torch.Generator().manual_seed(0))
    angles = torch.rand(5, nb["head_dim"] // 2, generator=torch.Generator().manual_seed(1))
    with nb["with_bug"](bugs["RoPE pairs (i, i + head_dim/2)"]):
        broken_rope = nb["apply_rope"](x, angles.cos(), angles.sin())
    half_split = nb["rope_rotate_half"](x, angles.cos(), angles.sin())
    # the broken line writes each turned pair (i, i + head_dim/2) back side by side; queries
    # and keys both, so the scores are Hugging Face's pairing's: compare in its order
    broken_rope = broken_rope.unflatten(-1, (-1, 2)).transpose(-2, -1).flatten(-2)
    keys = torch.randn(nb["n_kv_heads"], 4, nb["head_dim"], generator=torch.Generator())
    queries = torch.randn(nb["n_heads"], 4, nb["head_dim"], generator=torch.Generator())
    with nb["with_bug"](bugs["kv heads repeated"]):
        broken_pattern = nb["attention_pattern"](queries, keys)
    reads = torch.arange(nb["n_heads"]) % nb["n_kv_heads"]  # head h reads h % n_kv_heads
    expected_pattern = torch.softmax(
        (queries @ keys[reads].transpose(1, 2) / nb["head_dim"] ** 0.5)
        + nb["causal_mask_for"](4, 4),
        dim=-1,
    )
    data = nb["rope_scaling_data"]
    distances = data["distances"]
    picked = [0, 1, len(distances) // 3, len(distances) - 1]
    one_at_a_time = {}
    query, key = nb["q_per_token"][0].float(), nb["k_per_token"][0].float()
    unscaled = nb["unscaled_rope_frequencies"].float()
    scaled = nb["scale_rope_frequencies"](unscaled, data["factor"])
    for label, frequencies in (("unscaled", unscaled), ("scaled", scaled)):
        scores = []
        for index in picked:
            angle = distances[index] * frequencies  # [pairs]
            scores.append(float(nb["apply_rope"](query[None], angle.cos(), angle.sin())[0] @ key))
        one_at_a_time[label] = scores
    torch.save(
        {
            "printed": nb["silent_bug_damage"],
            "on_logits": nb["rope_scaling_logits"],
            "again": again,
            "restored": restored,
            "rope_bug_vs_half_split": float((broken_rope - half_split).abs().max()),
            "kv_bug_vs_h_mod_kv": float((broken_pattern - expected_pattern).abs().max()),
            "n_kv_heads": nb["n_kv_heads"],
            "n_heads": nb["n_heads"],
            "figure": data,
            "picked": picked,
            "one_at_a_time": one_at_a_time,
        },
        path,
    )


read_in_shared_run("embedded", silent_bugs)
