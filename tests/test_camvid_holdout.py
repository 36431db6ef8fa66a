"""benchmarks/camvid/holdout.py: one drive out of train/, judged on by itself; the report gets its column."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "camvid"))
from holdout import drive_of, split_off_drive  # noqa: E402

FRAMES = {"0001TP": 2, "0006R0": 3, "0016E5": 4}


def camvid_like(root: Path) -> Path:
    for split, frames in (("train", FRAMES), ("val", {"0016E5": 2})):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for drive, count in frames.items():
            for i in range(count):
                stem = f"{drive}_{split}{i:05d}"
                Image.fromarray(np.full((4, 6, 3), i, np.uint8)).save(root / split / "images" / f"{stem}.jpg")
                Image.fromarray(np.full((4, 6), i, np.uint8)).save(root / split / "labels" / f"{stem}.png")
    (root / "dataset.yaml").write_text("num_classes: 11\nignore_index: 11\n")
    return root


def stems(folder: Path) -> list:
    return sorted(p.stem for p in folder.iterdir())


def test_the_drive_left_out_is_in_no_training_folder_and_is_all_of_the_holdout(tmp_path):
    data = camvid_like(tmp_path / "camvid")
    splits = split_off_drive(data, "0006R0", tmp_path / "run" / "splits")
    train_images = stems(splits["train"] / "train" / "images")
    assert [drive_of(Path(s)) for s in train_images].count("0006R0") == 0
    assert len(train_images) == FRAMES["0001TP"] + FRAMES["0016E5"]
    held = stems(splits["holdout"] / "val" / "images")
    assert held == [f"0006R0_train{i:05d}" for i in range(3)]
    assert stems(splits["holdout"] / "val" / "labels") == held
    assert stems(splits["train"] / "train" / "labels") == train_images
    # val is the original val, the class facts the original dataset.yaml; all links, nothing copied
    assert stems(splits["train"] / "val" / "images") == stems(data / "val" / "images")
    for root in splits.values():
        assert (root / "dataset.yaml").read_text() == (data / "dataset.yaml").read_text()
        assert all(p.is_symlink() for p in (root / ("val" if root == splits["holdout"] else "train") / "images")
                   .iterdir())
    # a label is the one of the same frame
    label = splits["holdout"] / "val" / "labels" / "0006R0_train00002.png"
    assert label.resolve() == (data / "train" / "labels" / "0006R0_train00002.png").resolve()
    # building again replaces the folders (they follow the data)
    again = split_off_drive(data, "0001TP", tmp_path / "run" / "splits")
    assert stems(again["holdout"] / "val" / "images") == ["0001TP_train00000", "0001TP_train00001"]


def test_a_drive_the_data_lacks_is_one_sentence(tmp_path):
    data = camvid_like(tmp_path / "camvid")
    with pytest.raises(SystemExit, match="--holdout-drive Seq05VD: .* has no frames of that drive; its drives are "
                                         "0001TP, 0006R0, 0016E5."):
        split_off_drive(data, "Seq05VD", tmp_path / "splits")


def test_the_val_report_gets_the_unseen_drive_column(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "camvid"))
    from run import append_holdout_column

    val, unseen = tmp_path / "val", tmp_path / "unseen"
    val.mkdir()
    unseen.mkdir()
    stages = [("your model (PyTorch)", 54.3, 42.0), ("pruned INT8 (ONNX Runtime engine)", 53.8, 40.5)]
    (val / "report.json").write_text(json.dumps({"stages": [{"stage": s, "miou": v} for s, v, _ in stages]}))
    (unseen / "report.json").write_text(json.dumps({"stages": [{"stage": s, "miou": u} for s, _, u in stages]}))
    (val / "report.md").write_text("# report\n")
    append_holdout_column(val, unseen, "0006R0")
    text = (val / "report.md").read_text()
    assert "| your model (PyTorch) | 54.30 | 42.00 | +0.00 |" in text
    assert "| pruned INT8 (ONNX Runtime engine) | 53.80 | 40.50 | -1.50 |" in text
    document = json.loads((val / "report.json").read_text())
    assert [s["miou_unseen_drive"] for s in document["stages"]] == [42.0, 40.5]
    assert document["unseen_drive"]["drive"] == "0006R0"


def test_a_run_not_made_without_the_drive_is_refused_for_holdout_reports(tmp_path):
    from run import require_trained_without

    run = tmp_path / "run"
    (run / "splits" / "0006R0" / "val").mkdir(parents=True)
    (run / "stages.json").write_text(json.dumps({"data": "/data/camvid"}))
    with pytest.raises(SystemExit, match="made on /data/camvid, not on train-without-0006R0: its models saw drive"):
        require_trained_without(run, "0006R0")
    (run / "stages.json").write_text(json.dumps({"data": str(run / "splits" / "train-without-0006R0")}))
    assert require_trained_without(run, "0006R0") == run / "splits" / "0006R0"
    with pytest.raises(SystemExit):
        require_trained_without(run, "0001TP")  # trained without another drive


def test_publish_copies_the_unseen_drives_report_beside_val(tmp_path, monkeypatch):
    import run as camvid_run

    monkeypatch.setattr(camvid_run, "ROOT", tmp_path / "repo")
    run_dir, unseen = tmp_path / "run", tmp_path / "run" / "holdout-0006R0"
    unseen.mkdir(parents=True)
    (run_dir / "report.md").write_text("val | 0006R0\n")
    (run_dir / "commands.sh").write_text("edgeseg train\n")
    (unseen / "report.md").write_text("judged on 0006R0\n")
    (unseen / "report.json").write_text("{}")
    (unseen / "latency.png").write_bytes(b"png")
    camvid_run.publish(run_dir, run_dir, "cpu", unseen)
    results = tmp_path / "repo" / "benchmarks" / "results" / "camvid-cpu"
    assert (results / "report.md").read_text() == "val | 0006R0\n"
    assert (results / "holdout-0006R0" / "report.md").read_text() == "judged on 0006R0\n"
    assert sorted(p.name for p in (results / "holdout-0006R0").iterdir()) == ["latency.png", "report.json",
                                                                            "report.md"]
