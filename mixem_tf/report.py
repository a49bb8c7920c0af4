"""Plain-text tables for evaluation results (printed by the CLIs and bench scripts)."""

from __future__ import annotations

__all__ = ["format_table", "readout_report", "scores_text"]


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


def scores_text(row: dict) -> str:
    """ACC/NMI/ARI when the data has labels, else the cluster sizes' range."""
    if "acc" in row:
        return f"ACC {row['acc']:.4f}, NMI {row['nmi']:.4f}, ARI {row['ari']:.4f}"
    sizes = [s for s in row["cluster_sizes"] if s]
    return (f"{len(sizes)} non-empty clusters of {min(sizes)} to {max(sizes)} images "
            "(no labels to score against)")


def readout_report(readouts) -> str:
    """The read-out table as text, the default read-out marked with *."""
    labelled = "acc" in readouts[0].row
    shown = []
    for readout in readouts:
        sizes = [s for s in readout.row["cluster_sizes"] if s]
        shown.append({"readout": readout.name, "K": readout.num_clusters,
                      **({k: readout.row[k] for k in ("acc", "nmi", "ari")} if labelled else
                         {"non-empty": len(sizes), "smallest": min(sizes),
                          "largest": max(sizes)}),
                      "default": "*" if readout.row["default"] else ""})
    return format_table(shown, list(shown[0]))
