"""The comparison table printed by bench and demo, and its Markdown twin for reports."""
from __future__ import annotations

from typing import List, Optional

COLUMNS = [("stage", "stage"), ("backend", "backend"), ("precision", "precision"), ("params", "params (M)"),
           ("macs", "MACs (G)"), ("size_mb", "size MB"), ("p50", "latency p50 ms"), ("p99", "p99 ms"),
           ("fps", "FPS"), ("miou", "mIoU %")]


def _cell(row: dict, key: str) -> str:
    if key in ("p50", "p99"):
        value = (row.get("latency_ms") or {}).get(key)
    else:
        value = row.get(key)
    if value is None:
        return "-"
    if key == "params":
        return f"{value / 1e6:.2f}"
    if key == "macs":
        return f"{value / 1e9:.3f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def rows_as_text(rows: List[dict]) -> List[List[str]]:
    return [[_cell(row, key) for key, _ in COLUMNS] for row in rows]


def counted_note(rows: List[dict]) -> Optional[str]:
    """The sentence under a table whose params/MACs of some rows no sidecar records and were counted from the graph
    (``edgeseg.onnx_size``); None when every figure shown is a sidecar's."""
    counted = [str(row.get("stage") or row.get("artifact")) for row in rows if row.get("counted") == "onnx graph"]
    if not counted:
        return None
    return (f"params and MACs of {', '.join(counted)} counted from the ONNX graph (no sidecar records them; "
            f"BatchNorm is folded into the convolutions there); '-' where nothing says them (an engine built "
            f"elsewhere holds no graph to count)")


def print_table(rows: List[dict], title: Optional[str] = None) -> None:
    from rich.table import Table

    from edgeseg.console import out

    table = Table(title=title, caption=counted_note(rows))
    for _, header in COLUMNS:
        table.add_column(header, justify="left" if header in ("stage", "backend", "precision") else "right")
    for cells in rows_as_text(rows):
        table.add_row(*cells)
    out.print(table)


def markdown_table(rows: List[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows_as_text(rows)]
    note = counted_note(rows)
    return "\n".join(lines + ([f"\n{note}."] if note else [])) + "\n"
