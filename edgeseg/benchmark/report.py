"""The stage-by-stage report: what each step cost and gained, as JSON and Markdown."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgeseg import __version__
from edgeseg.benchmark.table import markdown_table
from edgeseg.fileio import write_json_atomic, write_text_atomic


def paired_speedup(slower: dict, faster: dict) -> Optional[Tuple[float, Optional[float], Optional[float]]]:
    """How many times faster ``faster`` ran than ``slower``: (median, lowest, highest) over the rounds, unrounded.

    Rows timed in the same interleaved rounds (``round_p50_ms``) are compared round by
    round: a round the machine was busy slows both stages in it, so its ratio still holds,
    and the lowest and highest round show how far noise moved the answer. Rows without
    matching rounds fall back to the ratio of their p50s, with no range (None, None).
    """
    slow_rounds, fast_rounds = slower.get("round_p50_ms"), faster.get("round_p50_ms")
    if slow_rounds and fast_rounds and len(slow_rounds) == len(fast_rounds) and min(fast_rounds) > 0:
        ratios = np.asarray(slow_rounds, dtype=np.float64) / np.asarray(fast_rounds, dtype=np.float64)
        return float(np.median(ratios)), float(ratios.min()), float(ratios.max())
    slow_p50, fast_p50 = (r.get("latency_ms", {}).get("p50") for r in (slower, faster))
    if not slow_p50 or not fast_p50:
        return None
    return slow_p50 / fast_p50, None, None


def _speedup_text(row: dict, key: str) -> str:
    """'1.91x (1.80-2.02)': the median over rounds, then the lowest and highest round's; '(pooled)' without rounds."""
    if key not in row:
        return "-"
    low, high = row[f"{key}_range"]
    if low is None:
        return f"{row[key]:.2f}x (pooled)"
    return f"{row[key]:.2f}x" + (f" ({low:.2f}-{high:.2f})" if low != high else "")


def _with_deltas(rows: List[dict]) -> List[dict]:
    """Add speed-up and mIoU change against the first stage (the teacher) and the previous stage."""
    first = rows[0]
    enriched = []
    for index, row in enumerate(rows):
        previous = rows[index - 1] if index else row
        row = dict(row)
        for key, reference in (("speedup_vs_first", first), ("speedup_vs_previous", previous)):
            speedup = paired_speedup(reference, row)
            if speedup is not None:
                median, low, high = speedup
                row[key] = round(median, 3)
                row[f"{key}_range"] = [None, None] if low is None else [round(low, 3), round(high, 3)]
        if row.get("miou") is not None:
            row["miou_change_vs_first"] = round(row["miou"] - first["miou"], 3)
            row["miou_change_vs_previous"] = round(row["miou"] - previous["miou"], 3)
        enriched.append(row)
    return enriched


def write_report(folder: str | Path, rows: List[dict], *, title: str, dataset: Optional[dict] = None,
                 notes: Optional[List[str]] = None, figures: Optional[Dict[str, str]] = None,
                 timing: Optional[dict] = None) -> dict:
    """``report.json`` and ``report.md`` in ``folder``; ``figures`` maps caption -> PNG file name in it."""
    folder = Path(folder)
    rows = _with_deltas(rows)
    report = {"title": title, "edgeseg": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "dataset": dataset, "stages": rows, "notes": notes or [], "figures": figures or {},
              "timing": timing}
    write_json_atomic(folder / "report.json", report)
    lines = [f"# {title}", "", markdown_table(rows), "## What each stage changed", "",
             "| stage | speed-up vs previous | speed-up vs first | mIoU change vs previous | mIoU change vs first |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['stage']} | {_speedup_text(row, 'speedup_vs_previous')} "
                     f"| {_speedup_text(row, 'speedup_vs_first')} "
                     f"| {row.get('miou_change_vs_previous', '-'):+} | {row.get('miou_change_vs_first', '-'):+} |")
    classes = list((rows[0].get("per_class_iou") or {}).keys())
    if classes:
        lines += ["", "## Per-class IoU (%)", "", "| stage | " + " | ".join(classes) + " |",
                  "|---|" + "---:|" * len(classes)]
        for row in rows:
            values = [row["per_class_iou"].get(c) for c in classes]
            lines.append(f"| {row['stage']} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values) + " |")
    for caption, name in (figures or {}).items():
        lines += ["", f"## {caption[0].upper()}{caption[1:]}", "", f"![{caption}]({name})"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    write_text_atomic(folder / "report.md", "\n".join(lines) + "\n")
    return report
