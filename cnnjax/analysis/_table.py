"""Aligned plain-text tables, shared by the model summary and the gradient-check report."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def render(
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    total: Sequence[str] | None = None,
) -> str:
    """Header, rule, body rows, rule, then the ``total`` row if given.

    Args:
      header: column titles.
      body: rows of cells, each as long as ``header``.
      right: indices of right-aligned (numeric) columns; the others align left.
      total: a last row below the closing rule.
    """
    rows = [tuple(header), *map(tuple, body), *([tuple(total)] if total else [])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [line(header), rule, *(line(row) for row in body), rule]
    if total:
        lines.append(line(total))
    return "\n".join(lines)
