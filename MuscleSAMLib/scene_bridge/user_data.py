"""The user's own MuscleSAM folder: learned ensembles and their runs, never the install tree.

An extension's install folder is replaced on every update and may be read-only, so learning from
corrections writes into a folder of the user's (the desktop module: Slicer's settings folder, or one
they choose). Its ``manifest.json`` holds the shipped ensembles with absolute file paths (the weights
stay where they were installed; learning starts from them) plus every ensemble learned there. The
shipped entries are refreshed from the shipped manifest on each call, so an update of the extension
is picked up and the user's learned entries are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputWriteError
from ..models.manifest import EnsembleSpec, WeightFile, load_manifest, replace_spec
from ..models.manifest_writer import update_manifest
from ..paths import DEFAULT_MANIFEST as SHIPPED_MANIFEST
DESCRIPTION = "MuscleSAM: the shipped ensembles (absolute paths into the install folder) and those learned here"


def _absolute(w: WeightFile | None) -> WeightFile | None:
    return None if w is None else WeightFile(str(w.path), w.path, w.sha256)


def user_manifest(folder: str | os.PathLike, shipped: str | os.PathLike = SHIPPED_MANIFEST) -> Path:
    """``folder``/manifest.json, created or refreshed: the shipped entries (current version) + the user's own."""
    target = Path(folder).expanduser() / "manifest.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        base = load_manifest(shipped)
        copies = [replace_spec(e, base=_absolute(e.base), shared=_absolute(e.shared),
                               members=tuple(_absolute(m) for m in e.members)) for e in base.ensembles]

        def refresh(current: list[EnsembleSpec]) -> list[EnsembleSpec]:
            own = [e for e in current if e.name not in base.names]
            return copies + [replace_spec(e, default=False) for e in own]

        update_manifest(target, refresh, DESCRIPTION)
    except OSError as exc:
        raise OutputWriteError(f"{target.parent}: cannot keep learned ensembles there ({exc.strerror or exc}); "
                               "choose another folder for MuscleSAM data", exc.errno) from None
    return target


def learning_output(folder: str | os.PathLike, stamp: str) -> Path:
    """Where one learning run writes its report and evaluation: ``folder``/learning/<stamp>."""
    return Path(folder).expanduser() / "learning" / stamp
