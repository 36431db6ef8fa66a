"""Leave one CamVid drive out of training, to judge every stage on streets the model never saw.

CamVid's val split (101 frames of drive 0016E5) shares its drive with 204 training frames, so it
flatters every choice made on it. File stems start with the drive they were filmed on (0001TP,
0006R0, 0016E5, Seq05VD); 0006R0 is in neither val nor the test split. ``split_off_drive`` builds,
from symbolic links (the data is never copied):

    FOLDER/train-without-DRIVE/  train/ (every train frame but DRIVE's), val/ (the original val), dataset.yaml
    FOLDER/DRIVE/                val/ (DRIVE's train frames: what the stages are judged on), dataset.yaml

so `edgeseg train/distill/prune/calibrate --data FOLDER/train-without-DRIVE` never see DRIVE, and
`edgeseg report --data FOLDER/DRIVE` measures every stage on it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def drive_of(path: Path) -> str:
    """CamVid names a frame DRIVE_FRAME.ext (0016E5_07959.png, Seq05VD_f00000.png)."""
    return path.stem.split("_", 1)[0]


def split_off_drive(data: Path, drive: str, folder: Path) -> Dict[str, Path]:
    """Build the two folders described above under ``folder``; returns {"train": ..., "holdout": ...}."""
    data, folder = Path(data).resolve(), Path(folder)
    images = sorted(p for p in (data / "train" / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    drives = sorted({drive_of(p) for p in images})
    if drive not in drives:
        raise SystemExit(f"--holdout-drive {drive}: {data / 'train'} has no frames of that drive; its drives are "
                         f"{', '.join(drives)}.")
    labels = {p.stem: p for p in (data / "train" / "labels").iterdir()}
    missing = [p.name for p in images if p.stem not in labels]
    if missing:
        raise SystemExit(f"{data / 'train' / 'labels'} has no label for {missing[0]} (and {len(missing) - 1} more); "
                         f"CamVid's train split pairs every image with a label of the same stem.")
    train, holdout = folder / f"train-without-{drive}", folder / drive
    for root in (train, holdout):
        if root.exists():
            shutil.rmtree(root)  # rebuilt from the data each time: links are cheap and must match it
    for image in images:
        split = holdout / "val" if drive_of(image) == drive else train / "train"
        for kind, source in (("images", image), ("labels", labels[image.stem])):
            (split / kind).mkdir(parents=True, exist_ok=True)
            os.symlink(source, split / kind / source.name)
    os.symlink(data / "val", train / "val", target_is_directory=True)
    for root in (train, holdout):
        if (data / "dataset.yaml").exists():
            os.symlink(data / "dataset.yaml", root / "dataset.yaml")
    return {"train": train, "holdout": holdout}
