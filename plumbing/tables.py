"""The tables the notebook prints from its own measurements: formatting only, no model math."""

from __future__ import annotations

from collections.abc import Callable


def silent_bugs(
    damage: dict[str, dict], decode: Callable[[list[int]], str], answer_id: int, n_tokens: int
) -> None:
    """One line per bug of the notebook's silent-bugs section, as `measure` returned it."""
    answer = decode([answer_id])
    print(
        f"{'bug':32} next token  p({answer!r})  perplexity  logits apart  top-1 agrees  "
        f"({n_tokens} tokens)"
    )
    for bug, measured in damage.items():
        line = f"{bug:32} {decode([measured['next_token']])!r:>10} {measured['p_answer']:9.3f}"
        if "per_position" in measured:  # the trailing space has no longer run to compare
            line += f"  {measured['perplexity']:10.4g}"
            line += f"  {float(measured['per_position'].mean()):12.2g}"
            line += f"  {measured['top1_agreement']:12.0%}"
        print(line)


def elided(value: str | list, limit: int = 80) -> str:
    """`repr(value)`, or for a string longer than `limit` characters (a list longer than
    `limit` items) its start and its end with the middle left out: a long prompt, legible."""
    if len(value) <= limit:
        return repr(value)
    half = limit // 2
    if isinstance(value, str):
        return f"{value[:half]!r} … {value[-half:]!r} ({len(value):,} characters)"
    head, tail = ", ".join(map(repr, value[:half])), ", ".join(map(repr, value[-half:]))
    return f"[{head}, …, {tail}] ({len(value):,} items)"
