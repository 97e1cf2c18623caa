"""The section "When it goes quietly wrong": each bug's damage is computed, not typed; each
broken line is the bug it is named for; every function comes back; and the scaling figure
holds the notebook's own scores.

All read from the shared embedded run (`embedded_run`), whose kernel measures the section
again with its own functions (tests/support/kernel_readers.py, `silent_bugs`).
"""

from __future__ import annotations

import pytest
import torch

from tests.support.notebook_values import cell_text

pytestmark = pytest.mark.slow  # reads the shared kernel run

WINDOWS = (512, 8192, 4 * 8192)  # distances up to 1/16, 1 and 4 times the original context


@pytest.fixture(scope="module")
def section(embedded_run):
    return embedded_run["silent_bugs"]


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
