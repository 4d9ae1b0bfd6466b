"""THE manifest writer: add one ensemble entry to a manifest under a lock (training and learning both call it).

A manifest is shared: ``musclesam train`` and learning from corrections may add entries to the same
file at once (two runs, two users). :func:`add_entry` re-reads the file under an exclusive lock on its
folder, keeps everyone else's entries and description, and replaces it atomically
(:func:`~MuscleSAMLib.models.manifest.save_manifest`: re-validated, temp file + ``os.replace``), so a
concurrent writer's entry is never lost and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import WeightsError
from .manifest import EnsembleSpec, load_manifest, replace_spec, save_manifest


@contextlib.contextmanager
def manifest_lock(manifest: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive lock around a manifest read-modify-write: flock on its folder (POSIX; a no-op elsewhere).

    The folder, not the file, because the manifest is replaced (new inode) by every write.
    """
    try:
        import fcntl
    except ImportError:  # Windows: the atomic replace still keeps the file valid
        yield
        return
    fd = os.open(Path(manifest).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def add_entry(manifest: str | os.PathLike[str], spec: EnsembleSpec, *, replace: bool = False) -> str:
    """Add ``spec`` to ``manifest`` (created when absent) under the lock; returns the new file's sha256.

    An entry of the same name is refused (:class:`WeightsError`) unless ``replace`` (a retrained
    ensemble of the same name replaces the old one). A ``default`` spec takes the default from the
    entry that had it; otherwise ``default`` stays where it was.
    """
    path = Path(manifest)
    with manifest_lock(path):
        entries, description = [], ""
        if path.is_file():
            old = load_manifest(path)
            description = old.description
            if spec.name in old.names and not replace:
                raise WeightsError(f"manifest {old.path} already has an ensemble {spec.name!r} "
                                   "(added meanwhile?); not overwritten: choose another name")
            entries = [e for e in old.ensembles if e.name != spec.name]
        if spec.default:
            entries = [replace_spec(e, default=False) if e.default else e for e in entries]
        return save_manifest(path, entries + [spec], description)
