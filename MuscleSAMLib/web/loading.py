"""Opening the image and the ensemble for the web app (file reading off the event loop).

The image is read by the engine's reader (the same checks and messages as the CLI) and added to the
scene through the scene bridge; the ensemble is loaded, checksums verified, by ``load_ensemble``.
Both run in a thread so the page stays live; MRML is touched only back on the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..volumes import Volume


async def read_image(path: Path) -> Volume:
    """Read ``path`` with the engine's reader in a worker thread (InputError with a clear text on failure)."""
    from ..volumes import read_volume  # noqa: PLC0415

    return await asyncio.get_running_loop().run_in_executor(None, read_volume, path)


async def read_ensemble(name: str | None, manifest: Path | None, device: str | None) -> Any:
    """Load the ensemble (checksums verified) in a worker thread."""
    from ..models.loading import load_ensemble  # noqa: PLC0415

    return await asyncio.get_running_loop().run_in_executor(None, load_ensemble, name, manifest, device)


def display_name(path: Path) -> str:
    """'Thigh_001_water' for '.../Thigh_001_water.nii.gz'."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or "image"
