import json

from edgeseg.pipeline import demo


def test_fast_demo_runs_every_stage_and_writes_the_report(tmp_path):
    report = demo(str(tmp_path / "demo"), fast=True)
    stages = [row["stage"] for row in report["stages"]]
    assert len(stages) == 5 and stages[0] == "teacher" and stages[-1].startswith("engine INT8")
    written = json.loads((tmp_path / "demo" / "report.json").read_text())
    for row in written["stages"]:
        assert row["latency_ms"]["p50"] > 0 and 0 <= row["miou"] <= 100 and row["params"] > 0
    markdown = (tmp_path / "demo" / "report.md").read_text()
    assert "| teacher |" in markdown and "mIoU %" in markdown
    for name in ("teacher.pt", "student.pt", "pruned.pt", "pruned.onnx", "pruned.int8.onnx", "pruned.calib.cache"):
        assert (tmp_path / "demo" / name).exists() and (tmp_path / "demo" / name).stat().st_size > 0
    for figure in ("latency_vs_miou.png", "per_class_iou.png", "masks.png"):
        assert (tmp_path / "demo" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in markdown
    manifest = json.loads((tmp_path / "demo" / "stages.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == stages  # `edgeseg report` can measure the run again
