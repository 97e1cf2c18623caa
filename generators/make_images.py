"""Draw the notebook's diagrams into images/ with matplotlib alone (patches, arrows, text).

    python -m generators.make_images [OUT_DIR]   (default: images/)

Run it from anywhere; it rewrites every PNG in images/ from scratch. The output is
byte-for-byte reproducible: fixed figure sizes and dpi, an explicit white background
(so the images also read on a dark theme), no randomness, and no timestamp or
version string in the PNG metadata. Running it twice gives identical files.

Axis sizes are symbolic names exactly as the notebook uses them (dim, head_dim,
n_heads, n_kv_heads, tokens, vocab, ffn_hidden, n_layers), never concrete numbers.
Colours: orange = weights from the checkpoint, blue = activations,
green = the residual stream, purple = operations, yellow = the predicted token.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Arc, Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path as MplPath

from plumbing import REPO_DIR
from testbeds.diagram_data import (
    BPE_MERGE_RANKS,
    BPE_STATES,
    BPE_WHOLE_MERGED,
    BPE_WHOLE_MERGED_RANKS,
    BPE_WHOLE_RANK,
    BPE_WHOLE_WORD,
)

OUT_DIR = REPO_DIR / "images"
DPI = 150

INK = "#1F2933"
MUTED = "#52606D"
WHITE = "#FFFFFF"
# (fill, edge) per kind of thing drawn
COLORS = {
    "weight": ("#FDEBD3", "#B86E14"),
    "act": ("#DCEAF7", "#2C64A0"),
    "stream": ("#DDF1E4", "#2B7A4B"),
    "op": ("#ECE7F6", "#5B4A8C"),
    "result": ("#FFF3B0", "#9A7B00"),
    "mask": ("#CBD2D9", "#7B8794"),
    "plain": ("#FFFFFF", "#52606D"),
}
STREAM = COLORS["stream"][1]
GROUPS = [
    ("#D3EEE8", "#2A7F73"),
    ("#F6DCE4", "#A3415F"),
]  # grouped-query colours: kv head 0, kv head 1
TOKEN_COLORS = ["#4C78A8", "#E08A2B", "#54A24B", "#B279A2", "#D1495B"]

FS = 10.5  # body text, points
SMALL = 9.0  # the smallest text anywhere
TITLE = 13.0

matplotlib.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "mathtext.fontset": "dejavusans",
        "text.color": INK,
        "savefig.facecolor": WHITE,
        "figure.facecolor": WHITE,
    }
)


# ----------------------------------------------------------------------------------------------
# Shared drawing helpers. The axes fill the whole figure and one data unit is one inch, so
# sizes and gaps below are in inches and circles stay round.
# ----------------------------------------------------------------------------------------------


@dataclass
class Box:
    """A rectangle by its centre and size, for wiring arrows to its edges."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self):
        return self.x - self.w / 2

    @property
    def right(self):
        return self.x + self.w / 2

    @property
    def top(self):
        return self.y + self.h / 2

    @property
    def bottom(self):
        return self.y - self.h / 2

    def north(self, dx=0.0):
        return (self.x + dx, self.top)

    def south(self, dx=0.0):
        return (self.x + dx, self.bottom)

    def east(self, dy=0.0):
        return (self.right, self.y + dy)

    def west(self, dy=0.0):
        return (self.left, self.y + dy)


def canvas(width, height, title=None):
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor=WHITE)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.text(
            width / 2,
            height - 0.3,
            title,
            ha="center",
            va="center",
            fontsize=TITLE,
            fontweight="bold",
        )
    return fig, ax


def save(fig, name):
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / name
    fig.savefig(path, dpi=DPI, facecolor=WHITE, metadata={"Software": None})
    print(f"wrote {path}  ({int(fig.get_figwidth() * DPI)} × {int(fig.get_figheight() * DPI)} px)")


def text(ax, x, y, s, size=SMALL, color=MUTED, ha="center", va="center", **kwargs):
    return ax.text(x, y, s, fontsize=size, color=color, ha=ha, va=va, zorder=6, **kwargs)


def rounded(ax, x0, y0, w, h, fill, edge, lw=1.4, radius=0.08, zorder=3, ls="-"):
    """A rounded rectangle by its lower-left corner."""
    style = f"round,pad=0,rounding_size={radius}"
    ax.add_patch(
        FancyBboxPatch(
            (x0, y0),
            w,
            h,
            boxstyle=style,
            facecolor=fill,
            edgecolor=edge,
            lw=lw,
            ls=ls,
            zorder=zorder,
        )
    )


def box(
    ax,
    x,
    y,
    w,
    h,
    title,
    kind="op",
    sub=None,
    size=FS,
    sub_size=SMALL,
    bold=True,
    radius=0.08,
    lw=1.4,
):
    """A rounded box with a bold title and an optional smaller subtitle (may have several lines)."""
    fill, edge = COLORS[kind]
    rounded(ax, x - w / 2, y - h / 2, w, h, fill, edge, lw=lw, radius=radius)
    per_point = 1.22 / 72  # line height per point of font size, in inches
    title_h = size * per_point * (title.count("\n") + 1)
    sub_h = sub_size * per_point * (sub.count("\n") + 1) if sub else 0.0
    total = title_h + sub_h
    top = y + total / 2
    text(
        ax,
        x,
        top - title_h / 2,
        title,
        size=size,
        color=INK,
        fontweight="bold" if bold else "normal",
        linespacing=1.1,
    )
    if sub:
        text(
            ax,
            x,
            top - title_h - sub_h / 2,
            sub,
            size=sub_size,
            color=edge if kind != "plain" else MUTED,
            linespacing=1.1,
        )
    return Box(x, y, w, h)


def matrix(
    ax,
    x,
    y,
    w,
    h,
    kind="act",
    name=None,
    shape=None,
    rows=0,
    cols=0,
    name_gap=0.16,
    shape_gap=0.16,
    fill=None,
    lw=1.4,
    zorder=3,
):
    """A tensor drawn as a plain rectangle with faint grid lines, its name above and its shape
    below."""
    face, edge = COLORS[kind]
    ax.add_patch(
        Rectangle(
            (x - w / 2, y - h / 2),
            w,
            h,
            facecolor=fill or face,
            edgecolor=edge,
            lw=lw,
            zorder=zorder,
        )
    )
    for r in range(1, rows):
        yy = y - h / 2 + h * r / rows
        ax.plot([x - w / 2, x + w / 2], [yy, yy], color=edge, lw=0.5, alpha=0.35, zorder=4)
    for c in range(1, cols):
        xx = x - w / 2 + w * c / cols
        ax.plot([xx, xx], [y - h / 2, y + h / 2], color=edge, lw=0.5, alpha=0.35, zorder=4)
    if name:
        text(ax, x, y + h / 2 + name_gap, name, size=FS, color=INK, fontweight="bold")
    if shape:
        text(ax, x, y - h / 2 - shape_gap, shape, size=SMALL, color=edge)
    return Box(x, y, w, h)


def cell(ax, x0, y0, w, h, color, edge=None, lw=0.0, zorder=4):
    ax.add_patch(
        Rectangle((x0, y0), w, h, facecolor=color, edgecolor=edge or color, lw=lw, zorder=zorder)
    )


def arrow(ax, *points, color=INK, lw=1.4, ls="-", zorder=2):
    """A polyline through `points`, with an arrow head at the last point."""
    style = "-|>,head_length=0.7,head_width=0.32"
    patch = FancyArrowPatch(
        path=MplPath(points),
        arrowstyle=style,
        mutation_scale=12,
        color=color,
        lw=lw,
        linestyle=ls,
        zorder=zorder,
        joinstyle="miter",
    )
    ax.add_patch(patch)
    return patch


def line(ax, *points, color=INK, lw=1.4, ls="-", zorder=2):
    xs, ys = zip(*points, strict=True)
    ax.plot(
        xs,
        ys,
        color=color,
        lw=lw,
        ls=ls,
        zorder=zorder,
        solid_capstyle="butt",
        solid_joinstyle="miter",
    )


def dot(ax, x, y, color=INK, r=0.055):
    ax.add_patch(Circle((x, y), r, facecolor=color, edgecolor=color, zorder=7))


def op_circle(ax, x, y, symbol="+", r=0.17, color=INK, fill=WHITE, lw=1.6):
    """⊕ (symbol '+'), ⊙ ('dot') or ⊗ ('x') drawn from lines, so it looks the same everywhere."""
    ax.add_patch(Circle((x, y), r, facecolor=fill, edgecolor=color, lw=lw, zorder=5))
    k = r * 0.62
    if symbol == "+":
        line(ax, (x - k, y), (x + k, y), color=color, lw=lw, zorder=6)
        line(ax, (x, y - k), (x, y + k), color=color, lw=lw, zorder=6)
    elif symbol == "x":
        d = k * 0.75
        line(ax, (x - d, y - d), (x + d, y + d), color=color, lw=lw, zorder=6)
        line(ax, (x - d, y + d), (x + d, y - d), color=color, lw=lw, zorder=6)
    else:
        ax.add_patch(Circle((x, y), r * 0.22, facecolor=color, edgecolor=color, zorder=6))
    return Box(x, y, 2 * r, 2 * r)


def brace(ax, p0, p1, depth=0.12, color=MUTED, lw=1.2):
    """A curly brace from p0 to p1 that bulges to the left of the direction p0 → p1; returns its
    tip."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    nx, ny = -uy, ux
    s = np.linspace(0, length, 201)
    d = np.minimum(s, length - s)  # distance from the nearer end
    a = 0.025
    offset = depth / 2 * (1 - np.exp(-d / a)) + depth / 2 * np.exp(-(length / 2 - d) / a)
    ax.plot(
        x0 + ux * s + nx * offset,
        y0 + uy * s + ny * offset,
        color=color,
        lw=lw,
        zorder=5,
        solid_capstyle="round",
    )
    return (x0 + x1) / 2 + nx * depth, (y0 + y1) / 2 + ny * depth


def frame(ax, x0, y0, x1, y1, color=MUTED):
    """A dashed rounded rectangle grouping part of a diagram."""
    rounded(
        ax, x0, y0, x1 - x0, y1 - y0, "none", color, lw=1.3, radius=0.15, zorder=1, ls=(0, (5, 3))
    )


def pseudo(i, j=0, seed=0.0):
    """Deterministic numbers in [0, 1) for shading cells (no random number generator needed)."""
    v = math.sin(12.9898 * (i + 1) + 78.233 * (j + 1) + seed) * 43758.5453
    return v - math.floor(v)


def shade(cmap_name, value):
    return matplotlib.colormaps[cmap_name](value)


# ----------------------------------------------------------------------------------------------
# 1. architecture.png
# ----------------------------------------------------------------------------------------------


def architecture():
    W, H = 8.4, 12.9
    fig, ax = canvas(W, H, "Llama 3 forward pass")
    xs, xb, xw = 3.0, 5.7, 6.35  # residual stream, sublayer branch, side weights
    main_w, branch_w = 2.6, 2.9

    prompt = box(
        ax, xs, 11.85, main_w, 0.5, "prompt text", "plain", sub='"the answer to … everything is "'
    )
    ids = box(ax, xs, 10.85, main_w, 0.55, "prompt_tokens", "act", sub="token ids [tokens]")
    arrow(ax, prompt.south(), ids.north())
    text(ax, xs + 0.12, (prompt.bottom + ids.top) / 2, "tokenizer", ha="left")
    embed = box(
        ax, xs, 9.9, main_w, 0.55, "embedding: row lookup", "op", sub="one table row per token id"
    )
    arrow(ax, ids.south(), embed.north())
    table = box(
        ax,
        xw,
        9.9,
        2.1,
        0.7,
        "embedding table",
        "weight",
        sub="tok_embeddings.weight\n[vocab × dim]",
    )
    arrow(ax, table.west(), embed.east())
    start = box(ax, xs, 9.0, main_w, 0.5, "token_embeddings", "stream", sub="[tokens × dim]")
    arrow(ax, embed.south(), start.north())

    # one transformer layer, repeated
    top, bottom = 8.6, 2.75
    frame(ax, 0.35, bottom, 8.05, top)
    text(ax, 7.9, top - 0.27, "× n_layers", size=13, color=INK, ha="right", fontweight="bold")
    text(ax, 0.55, top - 0.27, "one transformer layer", size=FS, color=MUTED, ha="left")

    def sublayer(
        split_y, norm_y, block_y, block_h, add_y, norm_sub, block_title, block_sub, out_name
    ):
        dot(ax, xs, split_y, STREAM, r=0.07)
        norm = box(ax, xb, norm_y, branch_w, 0.5, "RMSNorm", "op", sub=norm_sub)
        arrow(ax, (xs, split_y), (xb, split_y), norm.north(), color=STREAM, lw=1.8)
        block = box(ax, xb, block_y, branch_w, block_h, block_title, "op", sub=block_sub)
        arrow(ax, norm.south(), block.north())
        add = op_circle(ax, xs, add_y, "+", r=0.18, color=STREAM)
        arrow(ax, block.south(), (xb, add_y), add.east(), lw=1.6)
        text(ax, (xs + xb) / 2 + 0.05, add_y + 0.15, out_name, size=SMALL, color=INK)
        text(
            ax,
            xs + 0.12,
            split_y + 0.15,
            "split off the un-normalized stream",
            size=SMALL,
            color=STREAM,
            ha="left",
        )
        return add

    add1 = sublayer(
        8.25,
        7.7,
        6.72,
        0.9,
        5.95,
        "attention_norm.weight",
        "attention",
        "grouped-query, RoPE,\ncausal mask, wq wk wv wo",
        "attention_output",
    )
    add2 = sublayer(
        5.45,
        4.9,
        3.97,
        0.8,
        3.2,
        "ffn_norm.weight",
        "SwiGLU feed-forward",
        "w2(silu(w1 x) ⊙ w3 x)",
        "ffn_output",
    )

    text(ax, xs - 0.27, add1.y, "stream + attention_output", size=SMALL, color=STREAM, ha="right")
    text(ax, xs - 0.27, add2.y, "stream + ffn_output", size=SMALL, color=STREAM, ha="right")
    text(
        ax, xs - 0.22, 7.1, "residual stream [tokens × dim]", size=SMALL, color=STREAM, rotation=90
    )
    text(ax, xs - 0.22, 4.3, "never normalized in place", size=SMALL, color=STREAM, rotation=90)

    final = box(ax, xs, 2.15, main_w, 0.55, "final RMSNorm", "op", sub="norm.weight → final_normed")
    # the residual stream: one straight line from the embeddings to the final norm
    arrow(ax, start.south(), add1.north(), color=STREAM, lw=3.2)
    arrow(ax, add1.south(), add2.north(), color=STREAM, lw=3.2)
    arrow(ax, add2.south(), final.north(), color=STREAM, lw=3.2)

    proj = box(
        ax, xs, 1.2, main_w, 0.55, "output projection", "op", sub="last token's row [dim] @ outputᵀ"
    )
    arrow(ax, final.south(), proj.north())
    out_w = box(
        ax, xw, 1.2, 2.1, 0.7, "output weight", "weight", sub="output.weight\n[vocab × dim]"
    )
    arrow(ax, out_w.west(), proj.east())
    logits = box(ax, xs, 0.35, main_w, 0.45, "logits [vocab]", "act", size=FS)
    arrow(ax, proj.south(), logits.north())
    answer = box(ax, xw, 0.35, 2.1, 0.45, '"42"', "result", size=12)
    arrow(ax, logits.east(), answer.west())
    text(ax, (logits.right + answer.left) / 2, 0.53, "argmax", size=SMALL, color=INK)
    save(fig, "architecture.png")


# ----------------------------------------------------------------------------------------------
# 2. tokens-embedding.png
# ----------------------------------------------------------------------------------------------


def tokens_embedding():
    W, H = 9.2, 5.6
    fig, ax = canvas(W, H, "Token ids pick rows of the embedding table")
    prompt = box(ax, 1.45, 4.75, 2.5, 0.45, '"the answer to the …"', "plain", size=FS, bold=False)
    tokens = ['"<|begin_of_text|>"', '"the"', '" answer"', '" to"', '" the"']
    chip_y = [3.55, 3.1, 2.65, 2.2, 1.75]
    table_rows = [
        0.95,
        3.95,
        2.05,
        3.35,
        2.7,
    ]  # where each id's row sits in the table (special tokens come last)
    text(ax, 0.95, 4.03, "token", size=SMALL, color=MUTED)
    text(ax, 2.45, 4.03, "id", size=SMALL, color=MUTED)
    arrow(ax, prompt.south(), (1.45, 4.2))
    text(ax, 1.6, 4.37, "tokenizer", size=SMALL, ha="left")
    tx, tw = 0.95, 1.6
    table = Box(4.75, 2.5, 1.5, 3.4)
    for k, (tok, y, row) in enumerate(zip(tokens, chip_y, table_rows, strict=True)):
        color = TOKEN_COLORS[k]
        box(ax, tx, y, tw, 0.36, tok, "plain", size=SMALL, bold=False, radius=0.06, lw=1.0)
        chip = box(
            ax, 2.45, y, 0.7, 0.36, f"id$_{k}$", "act", size=SMALL, bold=False, radius=0.06, lw=1.0
        )
        arrow(ax, chip.east(), (table.left, row), color=color, lw=1.3)
    text(ax, tx, 1.38, "⋮", size=FS)
    text(ax, 2.45, 1.38, "⋮", size=FS)
    text(ax, 1.7, 1.0, "prompt_tokens [tokens]", size=SMALL, color=COLORS["act"][1])

    # the table: many thin rows, the picked ones coloured
    matrix(ax, table.x, table.y, table.w, table.h, "weight", rows=34, name=None)
    text(ax, table.x, table.top + 0.38, "embedding_table", size=FS, color=INK, fontweight="bold")
    text(
        ax,
        table.x,
        table.top + 0.16,
        "tok_embeddings.weight",
        size=SMALL,
        color=COLORS["weight"][1],
    )
    text(ax, table.x, table.bottom - 0.18, "[vocab × dim]", size=SMALL, color=COLORS["weight"][1])
    row_h = table.h / 34
    out = Box(7.75, 2.65, 1.5, 5 * 0.45)
    for k, row in enumerate(table_rows):
        cell(ax, table.left, row - row_h / 2, table.w, row_h, TOKEN_COLORS[k], zorder=5)
        y = chip_y[k]
        cell(ax, out.left, y - 0.225, out.w, 0.45, TOKEN_COLORS[k], edge=WHITE, lw=1.0, zorder=4)
        arrow(ax, (table.right, row), (out.left, y), color=TOKEN_COLORS[k], lw=1.3)
    matrix(ax, out.x, out.y, out.w, out.h, "act", fill="none", name=None, zorder=6)
    text(ax, out.x, out.top + 0.38, "token_embeddings", size=FS, color=INK, fontweight="bold")
    text(ax, out.x, out.top + 0.16, "one row per token", size=SMALL, color=COLORS["act"][1])
    text(ax, out.x, out.bottom - 0.18, "[tokens × dim]", size=SMALL, color=COLORS["act"][1])
    text(
        ax,
        W / 2,
        0.35,
        "token_embeddings = embedding_table[prompt_tokens]  —  a lookup, no arithmetic",
        size=FS,
        color=INK,
    )
    save(fig, "tokens-embedding.png")


# ----------------------------------------------------------------------------------------------
# 3. rmsnorm.png
# ----------------------------------------------------------------------------------------------


def rmsnorm():
    W, H = 9.3, 4.7
    fig, ax = canvas(W, H, "RMSNorm")
    formula = (
        r"$\mathrm{out} = \dfrac{x}{\sqrt{\mathrm{mean}_{\mathrm{dim}}(x^2) + \mathrm{norm\_eps}}}"
        r" \odot \mathrm{weight}$"
    )
    text(ax, W / 2, 3.85, formula, size=13, color=INK)
    row, low = 2.45, 1.05
    frame(ax, 1.2, 0.55, 6.95, 3.0)
    text(ax, 1.32, 2.83, "float32", size=SMALL, color=MUTED, ha="left", fontweight="bold")
    x = matrix(ax, 0.6, row, 0.7, 0.9, "act", "x", "[tokens × dim]", rows=4, cols=4)
    split = 1.6
    dot(ax, split, row)
    line(ax, x.east(), (split, row))
    text(ax, split + 0.1, row + 0.17, "x.float()", size=SMALL, color=INK, ha="left")
    sq = box(ax, 2.375, low, 1.05, 0.55, "square", "op", sub="[tokens × dim]", size=SMALL)
    arrow(ax, (split, row), (split, low), sq.west())
    mean = box(ax, 3.805, low, 1.25, 0.55, "mean over dim", "op", sub="[tokens × 1]", size=SMALL)
    arrow(ax, sq.east(), mean.west())
    eps = box(ax, 5.185, low, 0.95, 0.55, "+ norm_eps", "op", size=SMALL)
    arrow(ax, mean.east(), eps.west())
    rs = box(ax, 6.315, low, 0.75, 0.55, "rsqrt", "op", sub="1 / √·", size=SMALL)
    arrow(ax, eps.east(), rs.west())
    mul = op_circle(ax, rs.x, row, "x")
    arrow(ax, (split, row), mul.west())
    arrow(ax, rs.north(), mul.south())
    text(ax, rs.x - 0.12, (rs.top + mul.bottom) / 2, "one scale per token", ha="right", size=SMALL)
    text(ax, 4.2, row + 0.17, "each row divided by its root-mean-square", size=SMALL)
    mul2 = op_circle(ax, 8.0, row, "x")
    arrow(ax, mul.east(), mul2.west())
    text(ax, (6.95 + mul2.left) / 2, row + 0.17, ".to(x.dtype)", size=SMALL, color=INK)
    wt = matrix(ax, mul2.x, 1.2, 0.95, 0.22, "weight", cols=8)
    text(ax, wt.x, wt.bottom - 0.18, "norm_weight [dim]", size=SMALL, color=COLORS["weight"][1])
    text(ax, wt.x, wt.bottom - 0.4, "one scale per feature", size=SMALL)
    arrow(ax, wt.north(), mul2.south())
    out = matrix(ax, 8.8, row, 0.6, 0.9, "act", "out", "[tokens × dim]", rows=4, cols=4)
    arrow(ax, mul2.east(), out.west())
    save(fig, "rmsnorm.png")


# ----------------------------------------------------------------------------------------------
# 4. qkv-heads.png
# ----------------------------------------------------------------------------------------------


def qkv_heads():
    W, H = 9.3, 6.4
    fig, ax = canvas(W, H, "Query, key and value heads (grouped-query attention)")
    n_q, n_kv = 8, 2
    per = n_q // n_kv
    stripe = 0.42
    edge = COLORS["weight"][1]

    def split_matrix(x, top, n, label, names, shape):
        w = 1.15
        for i in range(n):
            g = i // (n // n_kv)
            fill, _ = GROUPS[g]
            y0 = top - (i + 1) * stripe
            ax.add_patch(
                Rectangle(
                    (x - w / 2, y0), w, stripe, facecolor=fill, edgecolor=edge, lw=1.0, zorder=3
                )
            )
            text(ax, x, y0 + stripe / 2, names(i), size=SMALL, color=INK)
        ax.add_patch(
            Rectangle(
                (x - w / 2, top - n * stripe),
                w,
                n * stripe,
                facecolor="none",
                edgecolor=edge,
                lw=1.6,
                zorder=4,
            )
        )
        text(ax, x, top + 0.4, label, size=FS, color=INK, fontweight="bold")
        text(ax, x, top + 0.17, "dim →", size=SMALL, color=edge)
        text(ax, x, top - n * stripe - 0.2, shape, size=SMALL, color=edge)
        return Box(x, top - n * stripe / 2, w, n * stripe)

    top = 5.1
    wq = split_matrix(1.75, top, n_q, "wq", lambda i: f"q head {i}", "[n_heads·head_dim × dim]")
    tip = brace(ax, (wq.left - 0.08, top - stripe), (wq.left - 0.08, top), depth=0.12)
    text(ax, tip[0] - 0.06, tip[1], "head_dim", ha="right", size=SMALL, color=edge)
    split_matrix(3.45, top, n_kv, "wk", lambda i: f"k head {i}", "[n_kv_heads·head_dim × dim]")
    split_matrix(
        3.45, top - 2.05, n_kv, "wv", lambda i: f"v head {i}", "[n_kv_heads·head_dim × dim]"
    )
    code = [
        "wq.view(n_heads, head_dim, dim)",
        "wk.view(n_kv_heads, head_dim, dim)",
        "wv.view(n_kv_heads, head_dim, dim)",
    ]
    for k, s in enumerate(code):
        text(
            ax, 0.3, 1.0 - 0.24 * k, s, size=SMALL, color=INK, family="DejaVu Sans Mono", ha="left"
        )

    # sharing: query head chips on top, kv head chips below
    x0, pitch = 5.25, 0.5
    qy, kvy = 4.55, 2.75
    text(
        ax,
        x0 + pitch * (n_q - 1) / 2,
        5.25,
        "each query head reads one kv head",
        size=FS,
        color=INK,
        fontweight="bold",
    )
    kv_boxes = []
    for g in range(n_kv):
        cx = x0 + pitch * (g * per + (per - 1) / 2)
        fill, stroke = GROUPS[g]
        rounded(ax, cx - 0.85, kvy - 0.3, 1.7, 0.6, fill, stroke, lw=1.5)
        text(ax, cx, kvy + 0.1, f"kv head {g}", size=FS, color=INK, fontweight="bold")
        text(ax, cx, kvy - 0.13, f"k head {g} + v head {g}", size=SMALL, color=stroke)
        kv_boxes.append(Box(cx, kvy, 1.7, 0.6))
    for h in range(n_q):
        cx = x0 + pitch * h
        fill, stroke = GROUPS[h // per]
        rounded(ax, cx - 0.2, qy - 0.2, 0.4, 0.4, fill, stroke, lw=1.3, radius=0.06)
        text(ax, cx, qy, str(h), size=FS, color=INK)
        target = kv_boxes[h // per]
        tx = target.x + (h % per - (per - 1) / 2) * 0.3
        arrow(ax, (cx, qy - 0.2), (tx, target.top), color=stroke, lw=1.3)
    text(ax, x0 + pitch * (n_q - 1) / 2, qy + 0.38, "query head h", size=SMALL)

    lines = [
        "query heads per kv head = n_heads / n_kv_heads",
        "query head h reads kv head h // (n_heads / n_kv_heads)",
        "(drawn with 8 query heads and 2 kv heads)",
    ]
    cx = x0 + pitch * (n_q - 1) / 2
    text(ax, cx, 1.85, lines[0], size=FS, color=INK)
    text(ax, cx, 1.5, lines[1], size=FS, color=INK)
    text(ax, cx, 1.15, lines[2], size=SMALL)
    text(ax, cx, 0.65, "fewer k/v heads → smaller wk, wv and k/v cache", size=SMALL)
    save(fig, "qkv-heads.png")


# ----------------------------------------------------------------------------------------------
# 5. rope.png
# ----------------------------------------------------------------------------------------------


def rope():
    W, H = 9.3, 5.2
    fig, ax = canvas(
        W, H, "RoPE: rotate each pair of features by an angle that grows with position"
    )
    text(
        ax,
        0.35,
        4.4,
        "one head's q (or k) vector for the token at position m  [head_dim]",
        size=FS,
        color=INK,
        ha="left",
    )
    cw, ch, y = 0.52, 0.42, 3.75
    pairs = [("0", "1", "0"), ("2", "3", "1"), ("4", "5", "2"), None, ("2i", "2i+1", "i"), None]
    angles = [2.1, 1.2, 0.6, None, 0.25, None]  # how far each drawn pair has turned (illustrative)
    x = 0.35
    edge = COLORS["act"][1]
    for pair, angle in zip(pairs, angles, strict=True):
        if pair is None:
            text(ax, x + 0.25, y, "…", size=13, color=INK)
            x += 0.5
            continue
        a, b, i = pair
        for k, sub in enumerate((a, b)):
            cell(ax, x + k * cw, y - ch / 2, cw, ch, COLORS["act"][0], edge=edge, lw=1.0)
            text(ax, x + k * cw + cw / 2, y, f"$x_{{{sub}}}$", size=FS, color=INK)
        rounded(
            ax,
            x - 0.04,
            y - ch / 2 - 0.04,
            2 * cw + 0.08,
            ch + 0.08,
            "none",
            INK,
            lw=1.3,
            radius=0.07,
            zorder=5,
        )
        cx = x + cw
        text(ax, cx, y - 0.42, f"pair {i}", size=SMALL)
        # a small dial showing how far this pair has turned
        dy, r = 2.35, 0.36
        ax.add_patch(Circle((cx, dy), r, facecolor=WHITE, edgecolor=MUTED, lw=1.0, zorder=3))
        line(ax, (cx - r, dy), (cx + r, dy), color="#C5CCD3", lw=0.8, zorder=3)
        arrow(ax, (cx, dy), (cx + r * 0.92, dy), color="#9AA5B1", lw=1.2, zorder=4)
        arrow(
            ax,
            (cx, dy),
            (cx + r * 0.92 * math.cos(angle), dy + r * 0.92 * math.sin(angle)),
            color=COLORS["op"][1],
            lw=1.6,
            zorder=5,
        )
        arrow(ax, (cx, y - 0.55), (cx, dy + r + 0.05), color=MUTED, lw=1.0)
        text(ax, cx, dy - r - 0.22, rf"$m\,\theta_{{{i}}}$", size=FS, color=COLORS["op"][1])
        x += 2 * cw + 0.25
    text(
        ax,
        0.35,
        1.45,
        r"$\theta_i = \mathrm{rope\_theta}^{\,-2i/\mathrm{head\_dim}}$,   i = 0 … head_dim/2 − 1",
        size=FS,
        color=INK,
        ha="left",
    )
    text(
        ax,
        0.35,
        1.05,
        r"$x'_{2i} = x_{2i}\cos(m\theta_i) - x_{2i+1}\sin(m\theta_i)$",
        size=FS,
        color=INK,
        ha="left",
    )
    text(
        ax,
        0.35,
        0.7,
        r"$x'_{2i+1} = x_{2i}\sin(m\theta_i) + x_{2i+1}\cos(m\theta_i)$",
        size=FS,
        color=INK,
        ha="left",
    )
    text(
        ax,
        0.35,
        0.3,
        "pairs are adjacent features (2i, 2i+1) in Meta's layout; early pairs turn fast, late "
        "pairs slowly",
        size=SMALL,
        ha="left",
    )

    # inset: the unit circle with one pair before and after the rotation
    cx, cy, r = 7.6, 2.3, 0.95
    rounded(ax, 6.45, 0.6, 2.65, 3.75, "#F7F8FA", "#C5CCD3", lw=1.0, radius=0.12, zorder=1)
    text(ax, 7.775, 4.05, "pair i in its own plane", size=FS, color=INK, fontweight="bold")
    ax.add_patch(Circle((cx, cy), r, facecolor="none", edgecolor="#9AA5B1", lw=1.0, zorder=2))
    arrow(ax, (cx - r - 0.15, cy), (cx + r + 0.25, cy), color="#9AA5B1", lw=0.9)
    arrow(ax, (cx, cy - r - 0.15), (cx, cy + r + 0.25), color="#9AA5B1", lw=0.9)
    text(ax, cx + r + 0.15, cy - 0.2, "$x_{2i}$", size=SMALL, color=INK)
    text(ax, cx + 0.1, cy + r + 0.22, "$x_{2i+1}$", size=SMALL, color=INK, ha="left")
    a0, turn = math.radians(30), math.radians(70)
    p0 = (cx + r * math.cos(a0), cy + r * math.sin(a0))
    p1 = (cx + r * math.cos(a0 + turn), cy + r * math.sin(a0 + turn))
    arrow(ax, (cx, cy), p0, color=COLORS["act"][1], lw=2.0, zorder=5)
    arrow(ax, (cx, cy), p1, color=COLORS["op"][1], lw=2.0, zorder=5)
    ax.add_patch(
        Arc(
            (cx, cy),
            0.8,
            0.8,
            theta1=math.degrees(a0),
            theta2=math.degrees(a0 + turn),
            color=COLORS["op"][1],
            lw=1.4,
            zorder=4,
        )
    )
    mid = a0 + turn / 2
    text(
        ax,
        cx + 0.58 * math.cos(mid),
        cy + 0.58 * math.sin(mid),
        r"$m\theta_i$",
        size=FS,
        color=COLORS["op"][1],
    )
    text(ax, p0[0] + 0.06, p0[1] + 0.02, "before", size=SMALL, color=COLORS["act"][1], ha="left")
    text(ax, p1[0] - 0.12, p1[1] + 0.02, "after", size=SMALL, color=COLORS["op"][1], ha="right")
    text(ax, 7.775, 0.85, "length unchanged", size=SMALL)
    save(fig, "rope.png")


# ----------------------------------------------------------------------------------------------
# 6. attention-scores.png
# ----------------------------------------------------------------------------------------------


def token_square(ax, x, y, size, n, value, edge, masked=None):
    """An n × n grid; value(i, j) gives a colour, masked(i, j) marks cells drawn grey."""
    c = size / n
    x0, y0 = x - size / 2, y + size / 2
    for i in range(n):
        for j in range(n):
            color = value(i, j)
            cell(ax, x0 + j * c, y0 - (i + 1) * c, c, c, color, edge=WHITE, lw=0.8)
    ax.add_patch(
        Rectangle((x0, y0 - size), size, size, facecolor="none", edgecolor=edge, lw=1.4, zorder=6)
    )
    return Box(x, y, size, size)


def causal_weights(n):
    weights = []
    for i in range(n):
        logits = [3.0 * pseudo(i, j, 1.0) for j in range(i + 1)]
        total = sum(math.exp(v) for v in logits)
        weights.append([math.exp(v) / total for v in logits] + [0.0] * (n - i - 1))
    return weights


def attention_scores():
    W, H = 9.3, 3.9
    fig, ax = canvas(W, H, "Attention scores for one head")
    n, y, s = 6, 2.05, 1.2
    act = COLORS["act"][1]
    q = matrix(ax, 0.65, y, 0.5, s, "act", "q", None, rows=n, cols=2)
    text(ax, q.x, q.bottom - 0.18, "[tokens ×", size=SMALL, color=act)
    text(ax, q.x, q.bottom - 0.38, "head_dim]", size=SMALL, color=act)
    text(ax, 1.15, y, "·", size=20, color=INK)
    kt = matrix(ax, 2.0, y, s, 0.5, "act", "kᵀ", "[head_dim × tokens]", rows=2, cols=n)
    scores = token_square(
        ax, 4.35, y, s, n, lambda i, j: shade("Blues", 0.15 + 0.6 * pseudo(i, j)), act
    )
    arrow(ax, kt.east(), scores.west())
    text(ax, (kt.right + scores.left) / 2, y + 0.2, "/ √head_dim", size=SMALL, color=INK)
    text(ax, scores.x, scores.top + 0.16, "qk_scores", size=FS, color=INK, fontweight="bold")
    text(ax, scores.x, scores.bottom - 0.18, "[tokens × tokens]", size=SMALL, color=act)
    text(ax, 5.2, y, "+", size=16, color=INK)
    grey = COLORS["mask"]
    mask = token_square(ax, 6.05, y, s, n, lambda i, j: grey[0] if j > i else WHITE, grey[1])
    text(ax, mask.right - 0.34, mask.top - 0.34, "−∞", size=13, color=INK)
    text(ax, mask.left + 0.32, mask.bottom + 0.32, "0", size=13, color=INK)
    text(ax, mask.x, mask.top + 0.16, "causal_mask", size=FS, color=INK, fontweight="bold")
    text(ax, mask.x, mask.bottom - 0.18, "−∞ above the diagonal", size=SMALL, color=grey[1])
    weights = causal_weights(n)
    out = token_square(
        ax,
        8.2,
        y,
        s,
        n,
        lambda i, j: shade("Purples", 0.1 + 0.85 * weights[i][j]) if j <= i else WHITE,
        COLORS["op"][1],
    )
    arrow(ax, mask.east(), out.west())
    mid = (mask.right + out.left) / 2
    text(ax, mid, y + 0.2, "softmax", size=SMALL, color=INK)
    text(ax, mid, y - 0.2, "row-wise,", size=SMALL)
    text(ax, mid, y - 0.4, "float32", size=SMALL)
    text(ax, out.x, out.top + 0.16, "attention_weights", size=FS, color=INK, fontweight="bold")
    text(ax, out.x, out.bottom - 0.18, "[tokens × tokens]", size=SMALL, color=COLORS["op"][1])
    text(ax, out.x, out.bottom - 0.38, "each row sums to 1", size=SMALL, color=COLORS["op"][1])
    text(
        ax,
        W / 2,
        0.35,
        "rows: query token m  ·  columns: key token n  ·  token m may only attend to n ≤ m",
        size=SMALL,
        color=INK,
    )
    save(fig, "attention-scores.png")


# ----------------------------------------------------------------------------------------------
# 7. values-heads.png
# ----------------------------------------------------------------------------------------------


def values_heads():
    W, H = 9.3, 6.2
    fig, ax = canvas(W, H, "Weighting the values, then mixing all heads back into the stream")
    act = COLORS["act"][1]
    n, ty = 6, 4.35
    weights = causal_weights(n)
    aw = token_square(
        ax,
        1.0,
        ty,
        1.1,
        n,
        lambda i, j: shade("Purples", 0.1 + 0.85 * weights[i][j]) if j <= i else WHITE,
        COLORS["op"][1],
    )
    text(ax, aw.x, aw.top + 0.16, "attention_weights", size=FS, color=INK, fontweight="bold")
    text(ax, aw.x, aw.bottom - 0.18, "[tokens × tokens]", size=SMALL, color=COLORS["op"][1])
    text(ax, 1.9, ty, "@", size=14, color=INK)
    matrix(ax, 2.6, ty, 0.55, 1.1, "act", "v", "[tokens × head_dim]", rows=n, cols=2)
    text(ax, 3.2, ty, "=", size=14, color=INK)
    head_fill = "#F4C7A1"
    ho = matrix(ax, 3.75, ty, 0.55, 1.1, "act", None, None, rows=n, cols=2, fill=head_fill)
    text(
        ax,
        ho.right + 0.15,
        ty + 0.2,
        "head h output",
        size=FS,
        color=INK,
        fontweight="bold",
        ha="left",
    )
    text(ax, ho.right + 0.15, ty - 0.05, "[tokens × head_dim]", size=SMALL, color=act, ha="left")
    text(ax, ho.right + 0.15, ty - 0.4, "for query head h, v comes from", size=SMALL, ha="left")
    text(
        ax, ho.right + 0.15, ty - 0.6, "kv head h // (n_heads / n_kv_heads)", size=SMALL, ha="left"
    )

    # all heads side by side, then wo
    by = 1.75
    labels = ["head 0", "head 1", "…", "head h", "…", "head n_heads−1"]
    cw = 0.47
    cat = Box(0.4 + cw * len(labels) / 2, by, cw * len(labels), 1.2)
    for k, lab in enumerate(labels):
        fill = head_fill if lab == "head h" else ("#DCEAF7" if k % 2 == 0 else "#C9DDF1")
        x0 = cat.left + k * cw
        cell(ax, x0, by - 0.6, cw, 1.2, fill, edge=act, lw=0.8)
        text(ax, x0 + cw / 2, by, lab, size=SMALL, color=INK, rotation=90)
    ax.add_patch(
        Rectangle(
            (cat.left, cat.bottom), cat.w, cat.h, facecolor="none", edgecolor=act, lw=1.4, zorder=6
        )
    )
    text(ax, cat.x, cat.bottom - 0.2, "all_heads_output", size=FS, color=INK, fontweight="bold")
    text(ax, cat.x, cat.bottom - 0.42, "[tokens × n_heads·head_dim]", size=SMALL, color=act)
    hx = cat.left + 3.5 * cw
    arrow(ax, ho.south(), (ho.x, 3.05), (hx, 3.05), (hx, cat.top), color=MUTED, lw=1.3)
    text(ax, (ho.x + hx) / 2, 3.2, "concatenate all heads along features", size=SMALL)

    text(ax, 3.45, by, "@", size=14, color=INK)
    matrix(ax, 4.35, by, 1.2, 1.2, "weight", "woᵀ", "[n_heads·head_dim × dim]", rows=6, cols=6)
    text(ax, 5.2, by, "=", size=14, color=INK)
    ao = matrix(ax, 6.0, by, 1.0, 1.2, "act", "attention_output", "[tokens × dim]", rows=n, cols=4)

    sx = 8.4
    add = op_circle(ax, sx, by, "+", r=0.2, color=STREAM)
    arrow(ax, ao.east(), add.west())
    arrow(ax, (sx, 5.4), add.north(), color=STREAM, lw=3.2)
    arrow(ax, add.south(), (sx, 0.3), color=STREAM, lw=3.2)
    text(
        ax,
        sx - 0.15,
        5.25,
        "residual stream [tokens × dim]",
        size=FS,
        color=STREAM,
        ha="right",
        fontweight="bold",
    )
    text(
        ax,
        sx - 0.15,
        5.0,
        "un-normalized: the layer's input,",
        size=SMALL,
        color=STREAM,
        ha="right",
    )
    text(ax, sx - 0.15, 4.8, "not attention_norm's output", size=SMALL, color=STREAM, ha="right")
    text(
        ax,
        sx - 0.15,
        0.5,
        "stream_after_attention",
        size=FS,
        color=STREAM,
        ha="right",
        fontweight="bold",
    )
    save(fig, "values-heads.png")


# ----------------------------------------------------------------------------------------------
# 8. swiglu.png
# ----------------------------------------------------------------------------------------------


def swiglu():
    W, H = 9.3, 4.8
    fig, ax = canvas(W, H, "SwiGLU feed-forward network")
    text(
        ax,
        W / 2,
        3.95,
        r"$\mathrm{ffn}(x) = W_2\,(\,\mathrm{silu}(W_1 x) \odot W_3 x\,)$",
        size=14,
        color=INK,
    )
    text(ax, W / 2, 3.55, "silu(z) = z · sigmoid(z);   W x means x @ wᵀ", size=SMALL)
    act = COLORS["act"][1]
    mid, gy, uy = 2.05, 2.75, 1.3
    x = matrix(ax, 0.75, mid, 0.7, 0.9, "act", "x", None, rows=4, cols=3)
    text(ax, x.x, x.bottom - 0.18, "[tokens × dim]", size=SMALL, color=act)
    text(ax, x.x, x.bottom - 0.38, "(ffn_input)", size=SMALL, color=act)
    sx = 1.35
    dot(ax, sx, mid)
    line(ax, x.east(), (sx, mid))
    w1 = box(ax, 2.45, gy, 1.45, 0.8, "@ w1ᵀ", "weight", sub="w1 (gate)\n[ffn_hidden × dim]")
    w3 = box(ax, 2.45, uy, 1.45, 0.8, "@ w3ᵀ", "weight", sub="w3 (up)\n[ffn_hidden × dim]")
    arrow(ax, (sx, mid), (sx, gy), w1.west())
    arrow(ax, (sx, mid), (sx, uy), w3.west())
    silu = box(ax, 4.35, gy, 0.95, 0.62, "", "op")
    # a tiny silu curve inside its box
    zs = np.linspace(-4, 3, 60)
    ys = zs / (1 + np.exp(-zs))
    ax.plot(
        silu.x + zs * 0.09 + 0.045,
        silu.y - 0.2 + ys * 0.05,
        color=COLORS["op"][1],
        lw=1.1,
        zorder=6,
    )
    text(ax, silu.x, silu.y + 0.14, "SiLU", size=SMALL, color=INK, fontweight="bold")
    arrow(ax, w1.east(), silu.west())
    mul = op_circle(ax, 5.6, mid, "dot")
    arrow(ax, silu.east(), (mul.x, gy), mul.north())
    arrow(ax, w3.east(), (mul.x, uy), mul.south())
    text(ax, 4.35, uy + 0.15, "up: [tokens × ffn_hidden]", size=SMALL, color=act)
    text(ax, 4.35, gy + 0.47, "gate: [tokens × ffn_hidden]", size=SMALL, color=act)
    w2 = box(ax, 6.85, mid, 1.45, 0.8, "@ w2ᵀ", "weight", sub="w2 (down)\n[dim × ffn_hidden]")
    arrow(ax, mul.east(), w2.west())
    text(ax, mul.left - 0.1, mid, "elementwise", size=SMALL, ha="right")
    out = matrix(ax, 8.5, mid, 0.7, 0.9, "act", "ffn_output", "[tokens × dim]", rows=4, cols=3)
    arrow(ax, w2.east(), out.west())
    text(
        ax,
        W / 2,
        0.35,
        "then  stream_after_attention + ffn_output  (added to the un-normalized stream, not to x)",
        size=SMALL,
        color=STREAM,
    )
    save(fig, "swiglu.png")


# ----------------------------------------------------------------------------------------------
# 9. output-projection.png
# ----------------------------------------------------------------------------------------------


def output_projection():
    W, H = 9.3, 4.1
    fig, ax = canvas(W, H, "From the last token's vector to the next token")
    act = COLORS["act"][1]
    ty = 2.5
    n = 5
    fn = matrix(ax, 0.85, ty, 0.9, 1.1, "act", "final_normed", "[tokens × dim]", rows=n, cols=4)
    cell(ax, fn.left, fn.bottom, fn.w, fn.h / n, "#F4C7A1", edge=act, lw=0.8, zorder=5)
    vec = matrix(ax, 2.5, ty, 1.0, 0.22, "act", None, None, cols=6, fill="#F4C7A1")
    text(ax, vec.x, vec.top + 0.35, "final_normed[-1]", size=FS, color=INK, fontweight="bold")
    text(ax, vec.x, vec.top + 0.14, "last token only", size=SMALL, color=act)
    text(ax, vec.x, vec.bottom - 0.18, "[dim]", size=SMALL, color=act)
    arrow(
        ax,
        (fn.right, fn.bottom + fn.h / n / 2),
        (1.6, fn.bottom + fn.h / n / 2),
        (1.6, ty),
        vec.west(),
        color=MUTED,
        lw=1.2,
    )
    text(ax, 3.3, ty, "@", size=14, color=INK)
    wt = matrix(ax, 5.2, ty, 3.1, 0.85, "weight", None, None, rows=4, cols=24)
    text(ax, wt.x, wt.top + 0.35, "output.weightᵀ", size=FS, color=INK, fontweight="bold")
    text(ax, wt.x, wt.top + 0.14, "[dim × vocab]", size=SMALL, color=COLORS["weight"][1])

    # logits as a bar chart, one column per vocabulary entry, under the matrix's columns
    nb, best = 48, 31
    bw = wt.w / nb
    base = 0.45
    for k in range(nb):
        h = 0.12 + 0.42 * pseudo(k, 3, 2.0) ** 2
        if k == best:
            h = 0.85
        color = COLORS["result"][1] if k == best else "#9DBBDB"
        cell(ax, wt.left + k * bw + bw * 0.1, base, bw * 0.8, h, color)
    line(ax, (wt.left, base), (wt.right, base), color=act, lw=1.2, zorder=5)
    arrow(ax, (wt.x - 0.6, wt.bottom - 0.05), (wt.x - 0.6, base + 0.62), color=MUTED, lw=1.2)
    text(
        ax,
        wt.x - 0.7,
        (wt.bottom + base + 0.62) / 2,
        "one score per vocabulary entry",
        size=SMALL,
        ha="right",
    )
    text(
        ax, wt.left - 0.12, base + 0.3, "logits", size=FS, color=INK, fontweight="bold", ha="right"
    )
    text(ax, wt.left - 0.12, base + 0.08, "[vocab]", size=SMALL, color=act, ha="right")
    bx = wt.left + best * bw + bw / 2
    text(ax, bx, base + 0.85 + 0.14, "max", size=SMALL, color=COLORS["result"][1])

    tid = box(ax, 8.1, base + 0.4, 1.55, 0.55, "next_token_id", "act", sub="token id", size=SMALL)
    arrow(ax, (wt.right + 0.08, tid.y), tid.west(), color=INK)
    text(ax, (wt.right + tid.left) / 2, tid.y + 0.17, "argmax", size=SMALL, color=INK)
    ans = box(ax, 8.1, ty, 1.0, 0.6, '"42"', "result", size=14)
    arrow(ax, tid.north(), ans.south())
    text(ax, tid.x - 0.1, (tid.top + ans.bottom) / 2, "tokenizer.decode", size=SMALL, ha="right")
    save(fig, "output-projection.png")


# ----------------------------------------------------------------------------------------------
# bpe-merges.png
# ----------------------------------------------------------------------------------------------


def piece_box(ax, x, y, part, unit, row_h, kind):
    """One BPE piece as a box as wide as its bytes, left edge at x (␣ for a space); its width."""
    width = len(part.encode()) * unit
    box(
        ax,
        x + width / 2 - 0.03,
        y,
        width - 0.08,
        row_h,
        part.replace(" ", "␣"),
        kind,
        size=SMALL,
        bold=False,
        radius=0.05,
        lw=1.0,
    )
    return width


def bpe_merges():
    W, H = 9.2, 5.9
    fig, ax = canvas(W, H, "BPE joins the adjacent pair of lowest rank, until none is a token")
    unit, row_h, x0, top = 0.62, 0.42, 1.35, 4.95
    text(ax, x0 - 0.3, top + 0.42, "bytes of the piece", size=SMALL, color=MUTED, ha="left")
    text(
        ax,
        x0 + 9 * unit + 0.35,
        top + 0.42,
        "new token: rank = id",
        size=SMALL,
        color=MUTED,
        ha="left",
    )
    for step, parts in enumerate(BPE_STATES):
        y = top - step * (row_h + 0.1)
        previous = BPE_STATES[step - 1] if step else None
        new = next(
            (
                k
                for k, part in enumerate(parts)
                if previous is not None and part not in previous[k : k + 1]
            ),
            None,
        )
        text(ax, 0.55, y, "bytes" if step == 0 else f"merge {step}", size=SMALL, color=MUTED)
        x = x0
        for k, part in enumerate(parts):
            kind = "result" if k == new else ("act" if step < len(BPE_STATES) - 1 else "result")
            x += piece_box(ax, x, y, part, unit, row_h, kind)
        if step:
            merged = parts[new]
            label = f"'{merged.replace(' ', '␣')}': {BPE_MERGE_RANKS[step - 1]:,}"
            text(
                ax, x0 + 9 * unit + 0.35, y, label, size=SMALL, color=COLORS["result"][1], ha="left"
            )
    bottom = top - (len(BPE_STATES) - 1) * (row_h + 0.1)
    text(
        ax,
        W / 2,
        bottom - 0.6,
        'no adjacent pair left is a token: " ultimate" is the single token 17,139',
        size=FS,
        color=INK,
    )
    save(fig, "bpe-merges.png")


def bpe_whole_piece():
    W, H = 9.2, 2.3
    fig, ax = canvas(W, H, "A piece that is itself a token is that token: looked up, not merged")
    unit, row_h, x0 = 0.3, 0.42, 2.0
    rows = [
        ("merges alone", BPE_WHOLE_MERGED, BPE_WHOLE_MERGED_RANKS, "act", 1.5),
        ("the vocabulary", [BPE_WHOLE_WORD], [BPE_WHOLE_RANK], "result", 0.92),
    ]
    for label, parts, ranks, kind, y in rows:
        text(ax, x0 - 0.25, y, label, size=SMALL, color=MUTED, ha="right")
        x = x0
        for part in parts:
            x += piece_box(ax, x, y, part, unit, row_h, kind)
        ids = ", ".join(f"{rank:,}" for rank in ranks)
        label = f"id{'s' if len(ranks) > 1 else ''} {ids}"
        text(ax, x0 + 17 * unit + 0.3, y, label, size=SMALL, color=INK, ha="left")
    text(
        ax,
        W / 2,
        0.35,
        f"{BPE_WHOLE_RANK:,} is one of the 28,000 tokens added to tiktoken's 100,000; "
        "no adjacent pair of the merges' pieces is a token",
        size=SMALL,
        color=INK,
    )
    save(fig, "bpe-whole-piece.png")


# ----------------------------------------------------------------------------------------------
# training-step.png
# ----------------------------------------------------------------------------------------------


def training_step():
    W, H = 9.4, 4.6
    fig, ax = canvas(W, H, "One training step: forward, loss, backward, update")
    y, back_y = 2.85, 1.35
    tokens = box(ax, 0.95, y, 1.3, 0.7, "tokens", "plain", sub="[tokens]")
    model = box(ax, 3.05, y, 1.9, 0.9, "the notebook's cells", "op", sub="weights from the copy")
    logits = matrix(ax, 5.15, y, 0.75, 0.9, "act", "logits", "[tokens × vocab]", rows=4, cols=3)
    loss = box(ax, 7.75, y, 2.2, 0.8, "loss", "result", sub="mean −log p(next token)")
    arrow(ax, tokens.east(), model.west())
    arrow(ax, model.east(), logits.west())
    arrow(ax, logits.east(), loss.west())
    text(ax, 2.0, y + 0.72, "1. forward", size=FS, color=INK, fontweight="bold")
    text(ax, 6.15, y + 0.3, "2. loss", size=FS, color=INK, fontweight="bold")
    grads = box(
        ax, 5.15, back_y, 2.3, 0.75, "weight.grad", "weight", sub="one number per weight: ∂loss/∂w"
    )
    arrow(ax, loss.south(), (loss.x, back_y), grads.east(), color=COLORS["result"][1])
    text(
        ax,
        loss.x - 0.15,
        back_y + 0.62,
        "3. backward (autograd)",
        size=FS,
        color=INK,
        fontweight="bold",
        ha="right",
    )
    update = box(ax, 2.15, back_y, 2.2, 0.75, "w ← w − step", "op", sub="Adam: a step per weight")
    arrow(ax, grads.west(), update.east(), color=COLORS["weight"][1])
    arrow(ax, update.north(), (update.x, model.bottom), color=COLORS["op"][1])
    text(ax, 0.35, back_y + 0.62, "4. update", size=FS, color=INK, fontweight="bold", ha="left")
    text(
        ax,
        W / 2,
        0.35,
        "repeat; the checkpoint file is never written — the weights are a float32 copy in memory",
        size=SMALL,
        color=MUTED,
    )
    save(fig, "training-step.png")


def main():
    global OUT_DIR
    if len(sys.argv) > 1:  # another folder, e.g. to compare with the committed images
        OUT_DIR = Path(sys.argv[1])
    architecture()
    tokens_embedding()
    rmsnorm()
    qkv_heads()
    rope()
    attention_scores()
    values_heads()
    swiglu()
    output_projection()
    bpe_merges()
    bpe_whole_piece()
    training_step()


if __name__ == "__main__":
    main()
