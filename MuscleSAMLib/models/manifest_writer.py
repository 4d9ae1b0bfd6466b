"""THE manifest writer: every change to a manifest file is a read-modify-write under one lock.

A manifest is shared: ``musclesam train``, learning from corrections and the desktop module's user
folder may change the same file at once (two runs, two users). :func:`update_manifest` re-reads the
file under an exclusive lock on its folder, applies the change to the entries found there, and
replaces it atomically (:func:`~MuscleSAMLib.models.manifest.save_manifest`: re-validated, temp file
+ ``os.replace``), so a concurrent writer's entry is never lost and a reader never sees half a file.
:func:`add_entry` is the common change: one new (or retrained) ensemble.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, List

from ..errors import WeightsError
from .manifest import EnsembleSpec, load_manifest, replace_spec, save_manifest

Change = Callable[[List[EnsembleSpec]], List[EnsembleSpec]]


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


def update_manifest(manifest: str | os.PathLike[str], change: Change, description: str | None = None) -> str:
    """Apply ``change`` (current entries, [] when the file is absent -> new entries) under the lock and
    write the result atomically; returns its sha256. ``description``: None keeps the file's own."""
    path = Path(manifest)
    with manifest_lock(path):
        entries: list[EnsembleSpec] = []
        old_description = ""
        if path.is_file():
            old = load_manifest(path)
            entries, old_description = list(old.ensembles), old.description
        return save_manifest(path, change(entries), old_description if description is None else description)


def add_entry(manifest: str | os.PathLike[str], spec: EnsembleSpec, *, replace: bool = False) -> str:
    """Add ``spec`` to ``manifest`` (created when absent) under the lock; returns the new file's sha256.

    An entry of the same name is refused (:class:`WeightsError`) unless ``replace`` (a retrained
    ensemble of the same name replaces the old one). A ``default`` spec takes the default from the
    entry that had it; otherwise ``default`` stays where it was.
    """
    def add(entries: list[EnsembleSpec]) -> list[EnsembleSpec]:
        if not replace and any(e.name == spec.name for e in entries):
            raise WeightsError(f"manifest {Path(manifest)} already has an ensemble {spec.name!r} "
                               "(added meanwhile?); not overwritten: choose another name")
        kept = [e for e in entries if e.name != spec.name]
        if spec.default:
            kept = [replace_spec(e, default=False) if e.default else e for e in kept]
        return kept + [spec]

    return update_manifest(manifest, add)
