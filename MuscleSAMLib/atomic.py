"""Atomic file writes: write to a temp file beside the destination, then ``os.replace``.

A crash, a read-only folder or a full disk never leaves a half-written file and never destroys the
previous version of the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, OutputWriteError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
LOW_SPACE_BYTES = 64 * 1024  # an unexplained write failure with less free than this is reported as a full disk


def write_failure(folder: str | os.PathLike, code: int | None, reason: str | None) -> OutputWriteError:
    """The one-line error for a failed write into ``folder`` (the folder the user chose)."""
    if code in NO_SPACE:
        return OutputWriteError(f"{folder}: no space left on the device (or quota reached); free some space or choose "
                                "another output folder. Nothing was written; earlier results there are unchanged.", code)
    if code in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((a for a in (Path(folder), *Path(folder).parents) if a.is_file()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else reason
    return OutputWriteError(f"{folder}: cannot write here ({reason or 'write failed'}); choose another output folder. "
                            "Nothing was written; earlier results there are unchanged.", code)


@contextmanager
def full_disk_names(folder: str | os.PathLike) -> Iterator[None]:
    """Inside, a full-disk :class:`OutputWriteError` is re-raised naming ``folder`` (the one the user
    chose) instead of the temp or staging folder the file was being written in."""
    try:
        yield
    except OutputWriteError as exc:
        if exc.errno in NO_SPACE:
            raise write_failure(folder, exc.errno, None) from None
        raise


def disk_nearly_full(path: str | os.PathLike) -> bool:
    """True when the file system holding ``path`` (or its nearest existing parent) has almost no space."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < LOW_SPACE_BYTES
    except OSError:
        return False


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give a temp file or folder the permissions a normally created one gets (mkstemp/mkdtemp use 0600/0700)."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_current_umask())


def check_output_path(path: str | os.PathLike) -> Path:
    """An output path the file system can take: refuses NUL bytes (and empty names) with a clear error."""
    text = os.fspath(path)
    if "\x00" in text or not text.strip():
        raise InputError(f"{text!r}: invalid output path (empty or contains a NUL byte)")
    return Path(text)


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in ``dest``'s folder; on success rename it onto ``dest``, else delete it."""
    dest = check_output_path(dest)
    suffix = "".join(dest.suffixes)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=dest.parent)
        os.close(fd)
    except OSError as exc:
        raise write_failure(dest.parent, exc.errno, exc.strerror) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # on disk before the rename: a crash never leaves a torn file
            os.fsync(fh.fileno())
        publish_mode(tmp_path)
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise write_failure(dest.parent, exc.errno, exc.strerror) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``dest`` atomically (NaN written as null)."""
    return write_text_atomic(dest, json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
