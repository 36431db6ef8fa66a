"""The stage-by-stage report: what each step cost and gained, as JSON and Markdown."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

from edgeseg import __version__
from edgeseg.benchmark.table import markdown_table
from edgeseg.fileio import write_json_atomic, write_text_atomic


def _with_deltas(rows: List[dict]) -> List[dict]:
    """Add speed-up and mIoU change against the first stage (the teacher) and the previous stage."""
    first = rows[0]
    enriched = []
    for index, row in enumerate(rows):
        previous = rows[index - 1] if index else row
        row = dict(row)
        p50, first_p50, prev_p50 = (r.get("latency_ms", {}).get("p50") for r in (row, first, previous))
        if p50:
            row["speedup_vs_first"] = round(first_p50 / p50, 3)
            row["speedup_vs_previous"] = round(prev_p50 / p50, 3)
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
        lines.append(f"| {row['stage']} | {row.get('speedup_vs_previous', '-')}x | {row.get('speedup_vs_first', '-')}x "
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
