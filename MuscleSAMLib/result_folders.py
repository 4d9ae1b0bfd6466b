"""Publishing a set of result files as one folder: never touch a user's files, never show half a set.

The one rule for every output folder (CLI ``segment``/``evaluate``/``export``/``train --from-bundles``,
the scene bridge's export used by the desktop module and the web app):

* The new files are written into a hidden staging folder *beside* the destination
  (``.NAME.staging-PID-xxxx``); a marker file :data:`MARKER` listing every file (size, sha256) is
  written last; then the staging folder is renamed onto the destination in one step. A reader sees
  the old complete set or the new complete set, never a mix.
* A destination that already exists is replaced only when it holds a previous MuscleSAM result of
  the same kind (its marker says so) and nothing else; a destination inside a result folder is refused
  (a published set changes only as a whole). A folder with any file MuscleSAM did not
  write (the user's image, labels, notes) is refused with the names of the files in the way:
  nothing there is deleted or overwritten.
* Leftovers of a killed writer (staging, or a previous result set aside mid-swap) are cleaned on the
  next publish into the same place: staging of a process that no longer runs is removed, a set-aside
  result whose destination vanished is put back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import check_output_path, full_disk_names, publish_mode, write_failure
from .errors import InputError

MARKER = ".musclesam-result.json"
STALE_AGE_S = 86400.0  # leftovers older than this are removed even when their owner cannot be checked
KIND_NAMES = {"segment": "a `musclesam segment` result", "bundle": "a corrections bundle",
              "evaluate": "a `musclesam evaluate` result", "learning": "a learning-from-corrections report"}


def _kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, f"a MuscleSAM {kind} result")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a published result folder, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _ours(name: str) -> bool:
    """The marker, and hidden leftovers MuscleSAM itself creates inside a result folder it wrote."""
    return name == MARKER or name.startswith((".staging-", ".tmp-", ".learning-work-"))


def files_in_the_way(dest: str | os.PathLike, kind: str) -> list[str]:
    """Names in ``dest`` that publishing a ``kind`` result there would delete although MuscleSAM did not
    write them (empty when ``dest`` is missing, empty, or a previous result of the same kind)."""
    d = Path(dest)
    if not d.is_dir():
        return []
    marker = read_marker(d)
    if marker is None or marker.get("kind") != kind:  # no result of this kind: every entry is in the way
        return sorted(e.name for e in d.iterdir() if marker is None or e.name != MARKER)
    return sorted(e.name for e in d.iterdir() if e.name not in marker["files"] and not _ours(e.name))


def check_replaceable(dest: str | os.PathLike, kind: str) -> Path:
    """Refuse (one-line :class:`InputError`) a destination that holds anything MuscleSAM did not write
    for a result of this ``kind``; returns ``dest`` as an absolute path."""
    d = _absolute(dest)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d}: is a file, not a folder; choose a folder name for the results")
    inside = next((a for a in d.parents if read_marker(a) is not None), None)
    if inside is not None:  # a published set changes only as a whole
        raise InputError(f"{d}: is inside {_kind_name(str(read_marker(inside).get('kind')))} ({inside}); choose a folder "
                         "outside it")
    in_way = files_in_the_way(d, kind)
    if in_way:
        marker = read_marker(d)
        what = (f"holds {_kind_name(str(marker.get('kind')))}, not {_kind_name(kind)}" if marker is not None
                and marker.get("kind") != kind else "holds files MuscleSAM did not write")
        shown = ", ".join(in_way[:5]) + (f" and {len(in_way) - 5} more" if len(in_way) > 5 else "")
        raise InputError(f"{d}: {what} ({shown}); nothing was changed there: choose a new or empty output folder")
    return d


def check_published(folder: str | os.PathLike, kind: str | None = None) -> dict | None:
    """Refuse a result folder whose marker lists a file that is missing (a copy cut short, a file deleted
    by hand) or names another kind; returns the marker (None for folders written before markers existed).
    Contents are checked by each reader (a file edited on purpose is judged by what it holds)."""
    d = Path(folder)
    marker = read_marker(d)
    if marker is None:
        return None
    if kind is not None and marker.get("kind") != kind:
        raise InputError(f"{d}: is {_kind_name(str(marker.get('kind')))}, not {_kind_name(kind)}")
    noun = "bundle" if marker.get("kind") == "bundle" else "result"
    for name, info in sorted(marker["files"].items()):
        f = d / name
        if isinstance(info, dict) and info.get("folder"):
            continue
        if not f.is_file():
            raise InputError(f"{d}: incomplete {noun}, missing {name}; run the command that wrote it again")
    return marker


def _absolute(dest: str | os.PathLike) -> Path:
    d = Path(os.path.abspath(check_output_path(dest)))
    if d.parent == d:
        raise InputError(f"{d}: cannot publish results as the root folder; choose a sub-folder")
    try:
        cwd = Path.cwd()
    except OSError:
        cwd = None
    if cwd is not None and (d == cwd or d in cwd.parents):  # a folder is published by renaming it: not the one we stand in
        raise InputError(f"{d}: is the current folder (or holds it); give a new sub-folder name for the results, e.g. --out results")
    return d


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it: only the age rule applies there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _owner_gone(p: Path) -> bool:
    """A leftover ``.NAME.staging-PID-xxxx`` / ``.NAME.old-PID-xxxx`` whose process ended (or that is very old)."""
    try:
        pid = int(p.name.rsplit("-", 2)[-2])
    except (ValueError, IndexError):
        pid = -1
    try:
        old = time.time() - p.stat().st_mtime > STALE_AGE_S
    except OSError:
        return False
    return old or (pid > 0 and pid != os.getpid() and not _alive(pid))


def clean_leftovers(dest: Path) -> None:
    """Put back a previous result a killed swap set aside; remove the staging of killed writers."""
    parent = dest.parent
    if not parent.is_dir():
        return
    aside = sorted((p for p in parent.glob(f".{dest.name}.old-*") if _owner_gone(p)), key=lambda p: p.stat().st_mtime)
    if aside and not dest.exists():
        try:
            os.rename(aside.pop(), dest)  # the newest complete previous result
        except OSError:
            pass
    for p in [*aside, *(q for q in parent.glob(f".{dest.name}.staging-*") if _owner_gone(q))]:
        shutil.rmtree(p, ignore_errors=True)


def _write_marker(stage: Path, kind: str, meta: dict | None) -> None:
    from .hashing import sha256_of_file

    files = {}
    for f in sorted(stage.rglob("*")):
        if f.is_file() and f.name != MARKER:
            files[f.relative_to(stage).as_posix()] = {"size": f.stat().st_size, "sha256": sha256_of_file(f)}
    tops = {n.split("/")[0] for n in files}
    files.update({t: {"folder": True} for t in tops if (stage / t).is_dir()})
    doc = {"written_by": "MuscleSAM", "kind": kind, "complete": True, "files": files, **(meta or {})}
    with open(stage / MARKER, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _swap(stage: Path, dest: Path) -> None:
    """Rename the finished staging folder onto ``dest``; a previous result is removed only afterwards."""
    aside = None
    if dest.exists():
        if not any(dest.iterdir()):
            dest.rmdir()
        else:
            aside = dest.with_name(f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(dest, aside)
    try:
        os.rename(stage, dest)
    except OSError:
        if aside is not None:
            os.rename(aside, dest)  # put the previous result back
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def publish_folder(dest: str | os.PathLike, kind: str, meta: dict | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; on success publish it as ``dest`` (module docstring), else delete it.

    Refuses before anything is written when ``dest`` holds files MuscleSAM did not write. Errors
    name ``dest``. ``meta`` is added to the marker (e.g. the image's sha256).
    """
    d = _absolute(dest)
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(d)
    except OSError as exc:
        raise write_failure(d.parent, exc.errno, exc.strerror) from None
    check_replaceable(d, kind)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{d.name}.staging-{os.getpid()}-", dir=d.parent))
    except OSError as exc:
        raise write_failure(d.parent, exc.errno, exc.strerror) from None
    try:
        with full_disk_names(d):
            yield stage
            _write_marker(stage, kind, meta)
        publish_mode(stage)
        check_replaceable(d, kind)  # a file may have appeared there meanwhile
        _swap(stage, d)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise write_failure(d, exc.errno, exc.strerror) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


__all__ = ["MARKER", "check_published", "check_replaceable", "clean_leftovers", "files_in_the_way", "publish_folder",
           "read_marker"]
