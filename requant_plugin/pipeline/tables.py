"""Plain-text and markdown tables for the terminal and the report."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False,
                 right: Sequence[bool] | None = None) -> str:
    """Align ``rows`` under ``header``; ``right[i]`` right-aligns column ``i`` (numbers).

    ``markdown=True`` gives a GitHub-style pipe table, otherwise two-space separated columns
    with a dashed rule under the header.
    """
    ncol = len(header)
    if any(len(r) != ncol for r in rows):
        raise ValueError("every row needs one cell per header column")
    align = list(right) if right is not None else [False] * ncol
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]

    def fmt(row: Sequence[str]) -> list[str]:
        return [c.rjust(w) if a else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]

    if markdown:
        rule = [("-" * max(w - 1, 1) + ":") if a else "-" * w for w, a in zip(widths, align, strict=True)]
        grid: list[list[str]] = [fmt(header), rule, *[fmt(r) for r in rows]]
        return "\n".join("| " + " | ".join(line) + " |" for line in grid)
    lines = ["  ".join(fmt(header)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(fmt(r)).rstrip() for r in rows]
    return "\n".join(lines)
