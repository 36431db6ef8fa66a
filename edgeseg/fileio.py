"""Atomic writes: an artifact is either complete or absent, never half-written.

Every file edgeseg produces goes through ``atomic_path``: the caller writes to a
temporary name in the destination folder and the file is renamed into place only
when the writer finished without an exception (rename within a folder is atomic on
POSIX). A killed process leaves the old file, or none, plus a stray ``.tmp-*`` file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgeseg.errors import EdgesegError, InputFileError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what a plain open() would have given the file


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, with one sentence, when ``path`` cannot be written."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise EdgesegError(f"Output folder {folder} does not exist; create it or choose another --out.")
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"Output folder {folder} is not writable; choose another --out.")
    if path.is_dir():
        raise EdgesegError(f"Output path {path} is a folder; give a file name.")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    except OSError as exc:  # a read-only or special file system, or no space for even an empty file
        if exc.errno == errno.ENOSPC:
            raise EdgesegError(f"The disk is full; cannot write {path}. Free some space and run again.") from exc
        raise EdgesegError(f"Cannot create files in {path.parent} ({exc.strerror}); choose a writable folder "
                           f"for the output.") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600 files; artifacts are meant to be shared
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        error = out_of_space_error(exc, path)
        if error is not None:
            raise error from exc
        raise


_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space_error(exc: BaseException, path: str | os.PathLike | None = None) -> EdgesegError | None:
    """One sentence for a write that failed for lack of space (full disk, quota, file-size limit), else None.

    PyTorch's zip writer reports a short write as a RuntimeError of its own, so that is
    recognised too.
    """
    torch_short_write = isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                                           or "inline_container" in str(exc))
    if not (isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE) and not torch_short_write:
        return None
    where = f" while writing {path}" if path else ""
    return EdgesegError(f"Out of disk space (or over a file-size limit){where}; free some space or choose "
                        f"another folder, and run again.")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; check the path.")
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder, not a file; give the file itself.")
    if path.stat().st_size == 0:
        raise InputFileError(f"{what} {path} is empty; recreate it.")
    return path


def require_onnx_model(path: str | os.PathLike, what: str = "ONNX model") -> Path:
    """``path`` as a Path when it exists and parses as ONNX (weights stored outside it are not read)."""
    path = require_file(path, what)
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types for truncated or foreign files
        raise InputFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}); it may be truncated "
                             f"or another format, so re-export it.") from exc
    return path
