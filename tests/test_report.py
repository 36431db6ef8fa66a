"""`edgeseg report RUN_DIR`: the run folder, the interleaved measurement, the figures, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli.main import cli
from edgeseg.errors import ConfigError, InputFileError
from edgeseg.report.figures import colourise, mask_grid_png, per_class_iou_png
from edgeseg.report.run_folder import Stage, read_run_folder, write_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_student, tiny_onnx, tiny_int8, tiny_data):
    """A run folder whose stages are the session's tiny artifacts (copied, with their sidecars)."""
    import shutil

    folder = tmp_path_factory.mktemp("run")
    for path in (tiny_student, tiny_onnx, tiny_int8):
        for file in (path, path.with_name(path.name + ".json")):
            if file.exists():
                shutil.copy2(file, folder / file.name)
    write_manifest(folder, "tiny run", [Stage("student", tiny_student.name), Stage("ONNX", tiny_onnx.name),
                                        Stage("INT8", tiny_int8.name)], data=str(tiny_data), notes=["made by a test"])
    return folder


def test_report_measures_every_stage_and_writes_markdown_json_and_pngs(run_dir, tmp_path):
    from edgeseg.report.api import report

    document = report(str(run_dir), out=str(tmp_path), rounds=3, iters_per_round=2, warmup=1, mask_images=2,
                      show=False)
    assert [row["stage"] for row in document["stages"]] == ["student", "ONNX", "INT8"]
    for row in document["stages"]:
        # every stage timed in every round: rounds x iters samples, all positive
        assert row["iterations"] == 6 and row["latency_ms"]["p50"] > 0 and row["fps"] > 0
        assert 0 <= row["miou"] <= 100 and set(row["per_class_iou"]) and row["num_images"] == 4
        assert row["size_mb"] > 0
    assert document["stages"][0]["backend"] == "pytorch" and document["stages"][2]["precision"] == "int8"
    # speed-ups are paired round by round: the median round's ratio, bracketed by the lowest and highest
    student_row, int8_row = document["stages"][0], document["stages"][2]
    assert len(int8_row["round_p50_ms"]) == 3
    per_round = np.divide(student_row["round_p50_ms"], int8_row["round_p50_ms"])
    assert int8_row["speedup_vs_first"] == round(float(np.median(per_round)), 3)
    assert int8_row["speedup_vs_first_range"] == [round(float(per_round.min()), 3), round(float(per_round.max()), 3)]
    student, onnx_row, int8 = (row["miou"] for row in document["stages"])
    # the FP32 ONNX export computes what the checkpoint computes (measured: the same 9.44 to the last digit)
    assert onnx_row == pytest.approx(student, abs=0.05)
    # what the session's seeded one-epoch student reaches on the 4 val images (measured 9.44; 1.5 for another
    # CPU's arithmetic), and INT8 within 1.0 of FP32 (measured 9.09, -0.35)
    assert student == pytest.approx(9.44, abs=1.5)
    assert abs(int8 - onnx_row) <= 1.0 and int8 != onnx_row  # INT8 really is another model
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["figures"] == {"latency vs mIoU": "latency_vs_miou.png", "per-class IoU": "per_class_iou.png",
                                  "predicted masks": "masks.png"}
    assert written["timing"]["rounds"] == 3 and "made by a test" in written["notes"]
    markdown = (tmp_path / "report.md").read_text()
    low, high = int8_row["speedup_vs_first_range"]
    assert f"| {int8_row['speedup_vs_first']:.2f}x ({low:.2f}-{high:.2f}) |" in markdown
    assert "| INT8 |" in markdown and "![predicted masks](masks.png)" in markdown and "p99 ms" in markdown
    for name in written["figures"].values():
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert not (run_dir / "report.md").exists()  # --out honoured


def test_report_cli_evaluates_on_the_data_given_instead_of_the_runs_own(run_dir, tmp_path):
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset

    other = write_dataset(tmp_path / "other", SyntheticConfig(seed=11, num_train=2, num_val=3, height=64, width=64))
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--data", str(other), "--out", str(tmp_path / "r"),
                                      "--rounds", "1", "--iters", "1", "--masks", "0"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["dataset"]["num_images"] == 3 and str(other) in written["dataset"]["root"]
    assert "predicted masks" not in written["figures"]


def test_a_folder_without_a_stage_list_is_one_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="no stages.json"):
        read_run_folder(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        read_run_folder(tmp_path / "missing")
    (tmp_path / "stages.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not a valid stage list"):
        read_run_folder(tmp_path)
    write_manifest(tmp_path, "t", [Stage("gone", "gone.onnx")])
    with pytest.raises(InputFileError, match="lacks gone.onnx"):
        read_run_folder(tmp_path)


def test_a_run_that_does_not_name_its_data_needs_data(run_dir, tmp_path):
    from edgeseg.report.api import report

    manifest = json.loads((run_dir / "stages.json").read_text())
    folder = tmp_path / "nodata"
    folder.mkdir()
    for stage in manifest["stages"]:
        for file in run_dir.glob(stage["artifact"] + "*"):
            (folder / file.name).write_bytes(file.read_bytes())
    write_manifest(folder, "t", [Stage(s["name"], s["artifact"]) for s in manifest["stages"]])
    with pytest.raises(ConfigError, match="pass --data"):
        report(str(folder), show=False)
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code != 0 and "pass --data" in result.output and "Traceback" not in result.output


def test_colourise_uses_the_palette_and_paints_ignored_pixels_black():
    palette = [(10, 20, 30), (200, 100, 0)]
    mask = np.array([[0, 1], [255, 1]])
    rgb = colourise(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [200, 100, 0]
    assert rgb[1, 0].tolist() == [0, 0, 0]


def test_figures_are_png_files_written_atomically(tmp_path):
    rows = [{"stage": "a", "per_class_iou": {"sky": 90.0, "road": None}},
            {"stage": "b", "per_class_iou": {"sky": 80.0, "road": 50.0}}]
    assert per_class_iou_png(tmp_path / "c.png", rows, title="t").read_bytes()[:4] == b"\x89PNG"
    masks = {"images": [np.zeros((8, 8, 3), np.uint8)], "labels": [np.zeros((8, 8), np.int64)],
             "predictions": {"a": [np.ones((8, 8), np.int64)]}}
    mask_grid_png(tmp_path / "m.png", masks, palette=[(0, 0, 0), (255, 0, 0)], class_names=["x", "y"])
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "m.png"]  # no temporary files left behind


@pytest.mark.slow
def test_camvid_benchmark_script_runs_its_smoke_profile_end_to_end(tiny_data, tmp_path):
    """benchmarks/camvid/run.py with the `smoke` recipe: every public command, the report, the targets."""
    out = tmp_path / "run"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "camvid" / "run.py"), "--profile", "smoke",
                    "--data", str(tiny_data), "--out", str(out)], check=True, capture_output=True, text=True)
    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]][0] == "your model (PyTorch)" and len(report["stages"]) == 6
    targets = report["targets"]
    stages = {s["stage"]: s for s in report["stages"]}
    assert targets["user_miou"] == stages["your model (PyTorch)"]["miou"]
    per_round = np.divide(stages["your model (ONNX FP32)"]["round_p50_ms"], stages["pruned (ONNX FP32)"]["round_p50_ms"])
    assert targets["fp32_twin_speedup_vs_user_onnx"] == round(float(np.median(per_round)), 2)
    assert targets["fp32_twin_speedup_rounds"] == [round(float(per_round.min()), 2), round(float(per_round.max()), 2)]
    assert targets["final_within_1_miou_of_user_model"] == (targets["miou_gap"] <= 1.0)
    commands = (out / "commands.sh").read_text().splitlines()
    verbs = [line.split()[1] for line in commands]
    assert verbs == ["train", "distill", "prune", "export", "export", "calibrate", "build-engine", "report"]
    assert "(every stage, from training the user's model to the report)" in (out / "report.md").read_text()
    # --from re-evaluates without training: only `report` is added to the command log
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "camvid" / "run.py"), "--from", str(out)],
                   check=True, capture_output=True, text=True)
    assert [line.split()[1] for line in (out / "commands.sh").read_text().splitlines()][8:] == ["report"]
    assert "(the report only, with --from)" in (out / "report.md").read_text()


def test_paired_speedup_keeps_a_busy_round_from_moving_the_answer():
    """One round where the machine was busy for the faster stage: the pooled p50s would move, the paired median not."""
    from edgeseg.benchmark.report import paired_speedup

    slower = {"round_p50_ms": [10.0, 10.2, 9.8, 10.1, 30.0], "latency_ms": {"p50": 10.1}}
    faster = {"round_p50_ms": [5.0, 5.1, 4.9, 5.05, 15.0], "latency_ms": {"p50": 5.05}}
    assert paired_speedup(slower, faster) == pytest.approx((2.0, 2.0, 2.0))
    faster["round_p50_ms"][1] = 10.2  # that round the faster stage alone was slowed
    assert paired_speedup(slower, faster) == pytest.approx((2.0, 1.0, 2.0))
    # rows from elsewhere (no rounds) compare their p50s, with no range
    assert paired_speedup({"latency_ms": {"p50": 9.0}}, {"latency_ms": {"p50": 3.0}}) == (3.0, None, None)
    assert paired_speedup({"latency_ms": {"p50": 9.0}}, {"latency_ms": {}}) is None
