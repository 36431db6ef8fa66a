"""PNG figures for results people would rather look at than read (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from edgeseg.fileio import atomic_path


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point beats on both axes (lower latency x, higher accuracy y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def latency_accuracy_png(path: str | Path, series: Dict[str, List[dict]], *, title: str,
                         reference: dict | None = None, x_label: str = "latency (ms, median)",
                         y_label: str = "val mIoU (%)") -> Path:
    """Scatter of ``{"x", "y", "label"}`` points per series, joined by lines, with the Pareto front drawn over them.

    ``reference`` (the unpruned/unquantised model) is drawn as a star.
    """
    import matplotlib

    matplotlib.use("Agg")  # render to a file on machines without a display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5), dpi=120)
    everything = []
    for name, points in series.items():
        points = sorted(points, key=lambda p: p["x"])
        axes.plot([p["x"] for p in points], [p["y"] for p in points], marker="o", label=name, alpha=0.85)
        for p in points:
            if p.get("label"):
                axes.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        everything += points
    if reference is not None:
        axes.plot([reference["x"]], [reference["y"]], marker="*", markersize=14, color="black", linestyle="none",
                  label=reference.get("label", "reference"))
        everything.append(reference)
    front = [everything[i] for i in pareto_front([(p["x"], p["y"]) for p in everything])]
    axes.step([p["x"] for p in front], [p["y"] for p in front], where="post", color="grey", linestyle="--",
              linewidth=1, label="Pareto front")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path
