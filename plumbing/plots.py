"""The notebook's figures, drawn from tensors the notebook computed — plumbing only.

Each function takes what a cell computed (on any device, in any dtype) and draws it;
none of them computes any part of the model.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

MAX_LABELLED_TOKENS = 40  # beyond this, token labels on an axis are unreadable
SHOWN_TOKENS = 32  # a [tokens × tokens] picture of a long prompt: its last 32


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().cpu()


def token_matrix(
    matrix: torch.Tensor, labels: list[str], title: str, cmap: str = "viridis"
) -> None:
    """A [tokens × tokens] matrix (scores, mask, attention weights) with token labels; of a
    long prompt, its last SHOWN_TOKENS rows and columns, which the title says."""
    if len(labels) > SHOWN_TOKENS:
        matrix, labels = matrix[-SHOWN_TOKENS:, -SHOWN_TOKENS:], labels[-SHOWN_TOKENS:]
        title = f"{title}\n(the last {SHOWN_TOKENS} tokens)"
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(_cpu(matrix), cmap=cmap)
    if len(labels) <= MAX_LABELLED_TOKENS:
        axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("key token")
    axes.set_ylabel("query token")
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    plt.show()


def rope_rotation(rope_angles: torch.Tensor, rope_frequencies: torch.Tensor) -> None:
    """Left: where a few pairs' rotations put the point (1, 0) at each position. Right:
    cos(m·θᵢ)."""
    angles, frequencies = _cpu(rope_angles), _cpu(rope_frequencies)
    n_tokens, n_pairs = angles.shape
    figure, (circle_axes, cos_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for pair in sorted({0, 1, n_pairs // 4, n_pairs - 1}):
        circle_axes.scatter(
            angles[:, pair].cos(),
            angles[:, pair].sin(),
            s=18,
            label=f"pair {pair}: θ = {frequencies[pair].item():.2g} rad/token",
        )
    for position in range(min(n_tokens, 6)):
        angle = angles[position, 0].item()
        circle_axes.annotate(
            f"m={position}",
            (math.cos(angle), math.sin(angle)),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    circle_axes.set_aspect("equal")
    circle_axes.set_xlim(-1.3, 1.3)
    circle_axes.set_ylim(-1.3, 1.3)
    circle_axes.set_title(f"the pair (1, 0) rotated to positions m = 0…{n_tokens - 1}")
    circle_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=7, ncol=2)
    image = cos_axes.imshow(angles.cos(), aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
    cos_axes.set_xlabel("pair i")
    cos_axes.set_ylabel("position m")
    cos_axes.set_title("cos(m·θᵢ): early pairs turn fast, late pairs hardly move")
    figure.colorbar(image, ax=cos_axes)
    figure.tight_layout()
    plt.show()


def rope_wavelengths(
    wavelengths: dict[str, torch.Tensor], original_context: int, high_freq_factor: float, title: str
) -> None:
    """Each pair's wavelength 2π/θᵢ, unscaled and scaled, against Llama 3's original context."""
    figure, axes = plt.subplots(figsize=(8, 3.6))
    for (label, values), style in zip(
        wavelengths.items(), ("o-", ".--", ".:", ".-."), strict=False
    ):
        axes.semilogy(_cpu(values), style, label=label)
    axes.axhline(original_context, color="gray", linewidth=0.8)
    axes.axhline(original_context / high_freq_factor, color="gray", linewidth=0.8, linestyle=":")
    axes.text(
        0,
        original_context * 1.3,
        f"above {original_context}: θᵢ divided by s",
        fontsize=8,
        color="gray",
    )
    axes.text(
        0,
        original_context / high_freq_factor / 2.4,
        f"below {original_context / high_freq_factor:g}: unchanged",
        fontsize=8,
        color="gray",
    )
    axes.set_xlabel("pair i")
    axes.set_ylabel("wavelength 2π/θᵢ (tokens)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    plt.show()


def attention_grid(
    maps: torch.Tensor, labels: list[str], layer: int, q_heads_per_kv_head: int
) -> None:
    """One heatmap per query head: [n_heads × tokens × tokens] attention weights of one layer."""
    n_heads, n_tokens = maps.shape[0], maps.shape[1]
    columns = min(n_heads, 8)
    rows = math.ceil(n_heads / columns)
    panel = 3.8 if n_heads <= 4 else 2.0
    labelled = n_tokens <= 32 and n_heads <= 4
    figure, grid = plt.subplots(
        rows, columns, figsize=(panel * columns, panel * rows + 0.6), squeeze=False
    )
    for head, axes in enumerate(grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if head >= n_heads:
            axes.axis("off")
            continue
        # the brightest weight shown is white: in a window of a long prompt, most weight falls
        # on keys outside it, and a scale up to 1 would draw it black
        axes.imshow(_cpu(maps[head]), cmap="magma", vmin=0, vmax=float(maps.max()))
        axes.set_title(f"head {head} (kv head {head // q_heads_per_kv_head})", fontsize=9)
        if labelled and head % columns == 0:
            axes.set_yticks(range(n_tokens), labels, fontsize=7)
        if labelled and head >= n_heads - columns:
            axes.set_xticks(range(n_tokens), labels, rotation=90, fontsize=7)
    figure.suptitle(
        f"layer {layer}: attention weights of all {n_heads} query heads (rows: query token, "
        "columns: key token)"
    )
    figure.tight_layout()
    plt.show()


def logit_lens(
    top_tokens: list[list[str]], top_probabilities: torch.Tensor, position_labels: list[str]
) -> None:
    """A [layers × positions] grid: each cell names the top next token after that layer, shaded by
    its probability."""
    probabilities = _cpu(top_probabilities)
    n_layers, n_positions = probabilities.shape
    figure, axes = plt.subplots(
        figsize=(max(6.0, 0.75 * n_positions + 2), max(2.5, 0.32 * n_layers + 1.6))
    )
    image = axes.imshow(probabilities, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    font = 7 if n_positions <= 20 else 5
    for layer in range(n_layers):
        for position in range(n_positions):
            dark = probabilities[layer, position] > 0.6
            axes.text(
                position,
                layer,
                top_tokens[layer][position],
                ha="center",
                va="center",
                fontsize=font,
                color="white" if dark else "black",
            )
    axes.set_xticks(range(n_positions), position_labels, rotation=90, fontsize=7)
    step = max(1, n_layers // 16)
    axes.set_yticks(
        range(0, n_layers, step), [str(layer) for layer in range(0, n_layers, step)], fontsize=7
    )
    axes.set_xlabel("input token (each column predicts what follows it)")
    axes.set_ylabel("after layer")
    axes.set_title("logit lens: the most likely next token if the model stopped after each layer")
    figure.colorbar(image, ax=axes, label="its probability")
    figure.tight_layout()
    plt.show()


def top_candidates(labels: list[str], probabilities: torch.Tensor) -> None:
    """A bar per candidate next token, most likely on top, log-scale probabilities."""
    values = _cpu(probabilities)
    figure, axes = plt.subplots(figsize=(8, 0.3 * len(labels) + 0.6))
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, values, color="tab:blue")
    axes.set_yticks(positions, labels, fontsize=9)
    axes.set_xscale("log")
    axes.set_xlabel("probability (log scale)")
    axes.set_title(f"the {len(labels)} most likely next tokens")
    figure.tight_layout()
    plt.show()


def loss_curve(losses: list[float] | dict[str, list[float]], title: str) -> None:
    """The training loss after every optimizer step: one curve, or one per label."""
    curves = losses if isinstance(losses, dict) else {"": losses}
    figure, axes = plt.subplots(figsize=(7, 3))
    colors = ["tab:blue", "tab:orange", "tab:green"][: len(curves)]
    for (label, curve), color in zip(curves.items(), colors, strict=True):
        steps = range(1, len(curve) + 1)
        axes.plot(steps, curve, marker="o", markersize=3, color=color, label=label or None)
    if len(curves) > 1:
        axes.legend()
    axes.set_xlabel("step")
    axes.set_ylabel("mean loss (nats per token)")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.show()


def int8_grid(weights_in_steps: torch.Tensor, ints: torch.Tensor) -> None:
    """One row of a matrix in units of its int8 step: left, every weight against the ±127
    range; right, the weights near zero and the integers they round to."""
    values, levels = _cpu(weights_in_steps), _cpu(ints)
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(10, 3.4))
    whole.plot(values, "o", markersize=3, color="tab:blue")
    for edge in (-127, 127):
        whole.axhline(edge, color="tab:red", linewidth=1)
    whole.set_ylim(-140, 140)
    whole.set_xlabel("weight (column of the row)")
    whole.set_ylabel("weight ÷ step")
    whole.set_title("the whole row: the largest weight sits on ±127")
    near = (values.abs() < 4).nonzero()[:, 0][:12]
    for column, index in enumerate(near.tolist()):
        zoom.plot([column], [values[index]], "o", color="tab:blue", markersize=5)
        zoom.plot([column - 0.3, column + 0.3], [levels[index]] * 2, color="tab:orange")
        zoom.plot([column, column], [values[index], levels[index]], color="0.6", linewidth=1)
    zoom.set_yticks(range(-4, 5))
    zoom.grid(axis="y", alpha=0.4)
    zoom.set_xticks(range(len(near)), [str(i) for i in near.tolist()], fontsize=8)
    zoom.set_xlabel("column (weights within 4 steps of zero)")
    zoom.set_title("near zero: each weight (dot) and its integer (bar)")
    figure.tight_layout()
    plt.show()


def quantization_error(
    block_sizes: list[int], errors: dict[str, list[float]], marks: dict[int, str]
) -> None:
    """Relative error of the quantized matrix against the number of weights sharing a scale,
    one panel per scheme, each from zero."""
    figure, panels = plt.subplots(1, len(errors), figsize=(10, 3.4))
    colors = ["tab:blue", "tab:orange"]
    for axes, (label, values), color in zip(panels, errors.items(), colors, strict=True):
        axes.plot(block_sizes, [100 * value for value in values], marker="o", color=color)
        for size, text in marks.items():
            axes.axvline(size, color="0.7", linewidth=1, linestyle="--")
            axes.annotate(
                text,
                (size, 0.04),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="bottom",
                ha="right",
                fontsize=8,
                color="0.35",
            )
        axes.set_xscale("log", base=2)
        axes.set_ylim(0, 1.15 * 100 * max(values))
        axes.set_xlabel("weights sharing one scale")
        axes.set_ylabel("relative error (%)")
        axes.set_title(label)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.show()


def silent_bugs(per_position: dict[str, torch.Tensor], per_layer: dict[str, torch.Tensor]) -> None:
    """How far each bug moved the model: the logits at every position of a longer input
    (left), and the residual stream after every layer (right), relative to the correct run."""
    figure, (along, down) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
    for label, values in per_position.items():
        along.plot(_cpu(values).float().clamp_min(1e-9), label=label, linewidth=1.2)
    along.set_yscale("log")
    along.set_xlabel("position in the input")
    along.set_ylabel("‖logits − correct‖ / ‖correct‖")
    along.set_title("where along the input")
    along.grid(alpha=0.3)
    for label, values in per_layer.items():
        layers = range(len(values))  # numbered from 0, as the checkpoint numbers them
        down.plot(layers, _cpu(values).float().clamp_min(1e-9), marker="o", label=label)
    down.set_yscale("log")
    down.set_xticks(list(range(len(next(iter(per_layer.values()))))))
    down.set_xlabel("after layer")
    down.set_ylabel("‖stream − correct‖ / ‖correct‖")
    down.set_title("where down the layers")
    down.grid(alpha=0.3)
    along.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    plt.show()


def rope_scaling_parting(
    positions: torch.Tensor, difference: torch.Tensor, original_context: int
) -> None:
    """How far a query-key score with scaled RoPE frequencies is from the unscaled one, by
    the distance between query and key; the original training context marked."""
    figure, axes = plt.subplots(figsize=(8, 3.4))
    axes.plot(_cpu(positions), _cpu(difference).float(), color="tab:red", linewidth=1.2)
    axes.axvline(original_context, color="0.4", linestyle="--", linewidth=1)
    axes.annotate(
        f" original context: {original_context:,}",
        (original_context, 0.92),
        xycoords=("data", "axes fraction"),
        fontsize=8,
        color="0.3",
    )
    axes.set_xlabel("distance between query and key (positions)")
    axes.set_ylabel("|score scaled − unscaled| / max |score|")
    axes.set_title("scaled and unscaled RoPE part with distance")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.show()


def sampling_rules(labels: list[str], probabilities: torch.Tensor, kept: dict[str, torch.Tensor]):
    """The most likely next tokens, once per sampling rule: the bars a rule keeps in colour,
    the others grey."""
    values = _cpu(probabilities).float().tolist()
    figure, panels = plt.subplots(1, len(kept), figsize=(11, 3.6), sharey=True)
    for axes, (rule, mask) in zip(panels, kept.items(), strict=True):
        colors = ["tab:blue" if keep else "0.8" for keep in _cpu(mask).tolist()]
        axes.barh(range(len(values)), values, color=colors)
        axes.set_yticks(range(len(values)), labels, fontsize=8)
        axes.invert_yaxis()
        axes.set_xlabel("probability")
        axes.set_title(f"{rule}: keeps {int(_cpu(mask).sum())} of these {len(values)}", fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    plt.show()
