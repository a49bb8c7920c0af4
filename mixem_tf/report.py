"""Plain-text tables for evaluation results (printed by the CLIs and bench scripts)."""

from __future__ import annotations

__all__ = ["format_table"]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Aligns a list of dicts as a table; floats get four decimals.

    Example:
        >>> print(format_table([{"read-out": "kmeans", "acc": 0.5}]))
        read-out  acc
        kmeans    0.5000
    """
    if not rows:
        return "(no results)"
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)
