"""An exported bundle folder -> one zip for download, complete or not at all.

The bundle folder is validated by the corrections package's own check first; the zip is written
beside its destination under a temporary name and renamed into place only when every file is in it,
so a download can never see a partial archive.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path



def zip_bundle(folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Zip every file of ``folder`` (under the folder's name) into ``dest`` atomically; returns ``dest``."""
    from ..outputs.bundle import check_bundle  # noqa: PLC0415 - the bundle format's own check

    src, out = check_bundle(folder), Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{out.name}-", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                zf.write(path, arcname=f"{src.name}/{path.relative_to(src).as_posix()}")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
