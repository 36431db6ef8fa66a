"""Reading images and label maps from disk into numpy, with clear errors for odd files."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeseg.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
HEIF_SUFFIXES = (".heic", ".heif")  # iPhones' photos; Pillow reads them through the optional pillow-heif
PHOTO_SUFFIXES = IMAGE_SUFFIXES + HEIF_SUFFIXES  # what predict and Segmenter take
HEIF_HINT = "pip install pillow-heif (or export the photos as JPEG)"
_heif = {}  # "readable": whether pillow-heif was found (and its opener registered), asked once


def heif_readable() -> bool:
    """Whether HEIC/HEIF photos can be read here: pillow-heif installed, its opener registered once."""
    if "readable" not in _heif:
        try:
            import pillow_heif
        except ImportError:
            _heif["readable"] = False
        else:
            pillow_heif.register_heif_opener()
            _heif["readable"] = True
    return _heif["readable"]


def _open(path: Path) -> Image.Image:
    if path.suffix.lower() in HEIF_SUFFIXES and not heif_readable():
        raise DataError(f"{path} is a HEIC photo, which Pillow reads only with pillow-heif: {HEIF_HINT}.")
    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}); re-export or remove it.") from exc


EXIF_ORIENTATION = 0x0112  # 1: stored upright; 2-8: mirrored and/or turned, as cameras and phones write it


def read_image(path: str | Path, upright: bool = False) -> np.ndarray:
    """Return an RGB uint8 HxWx3 array.

    Grayscale and palette images are expanded and an alpha channel is dropped (the
    models take three channels); 16-bit images are refused because scaling them to
    8 bits silently would change what the model sees. ``upright`` turns the pixels the
    way the file's EXIF orientation says, as photo viewers show them: a phone's portrait
    photo is stored sideways with that tag, and a model fed it sideways sees a scene on
    its side. ``predict`` and ``Segmenter`` read photos this way; datasets keep the
    stored pixels, which are what their label maps were drawn over.
    """
    path = Path(path)
    image = _open(path)
    if upright:
        image = _turned_upright(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise DataError(f"{path} is a {image.mode} (16/32-bit) image; convert it to 8-bit RGB before using it.")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _turned_upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as stored when it has none or the EXIF is damaged."""
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - older Pillows raise all sorts on malformed EXIF; the pixels are still good
        return image


def read_label(path: str | Path) -> np.ndarray:
    """Return an HxW uint8 class-index map from a single-channel (L or P) PNG."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("L", "P"):
        raise DataError(
            f"Label {path} has mode {image.mode}; labels must be single-channel 8-bit PNGs holding class indices, "
            f"or RGB colour-coded PNGs with the colours listed as `palette` in dataset.yaml.")
    return np.asarray(image)


def read_colour_label(path: str | Path, palette: np.ndarray, ignore_index: int) -> np.ndarray:
    """An HxW uint8 class map from an RGB colour-coded label: the pixel's colour's index in ``palette``.

    Colours not in the palette (void, or anti-aliased edges) become ``ignore_index``.
    """
    path = Path(path)
    image = _open(path)
    if image.mode not in ("RGB", "RGBA", "P"):
        raise DataError(f"Label {path} has mode {image.mode}, but dataset.yaml's label_format is rgb; give RGB "
                        f"colour-coded PNGs or drop label_format.")
    rgb = np.asarray(image.convert("RGB")).astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    palette = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    at = np.clip(np.searchsorted(sorted_keys, codes), 0, len(sorted_keys) - 1)
    found = sorted_keys[at] == codes
    return np.where(found, order[at], ignore_index).astype(np.uint8)


def list_images(folder: Path, suffixes=IMAGE_SUFFIXES) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))
