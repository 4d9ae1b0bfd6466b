"""Export the user's corrected segmentation as a corrections bundle (issue 7's format), atomically.

The segmentation node's muscle segments are read on the input volume's grid (the user's edits as
they are), and handed with the session's prediction, maps, prompts and interaction log to
:func:`MuscleSAMLib.outputs.bundle.write_bundle`, which writes the whole folder atomically
(temp folder + rename; a previous bundle is replaced only when the new one is complete).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..volumes import Volume
from ..engine.session import Session

if TYPE_CHECKING:
    from ..models.loading import LoadedEnsemble


def provenance(loaded: "LoadedEnsemble | None", volume_name: str, statuses: dict[int, str]) -> dict:
    """Where the prediction came from, for the bundle's provenance.json."""
    out: dict[str, Any] = {"front_end": "3D Slicer scene bridge", "volume_node": volume_name,
                           "segment_status": {str(k): v for k, v in sorted(statuses.items())},
                           "intended_use": "research and demonstration only; not for clinical use"}
    if loaded is not None:
        spec = loaded.ensemble.spec
        out.update({"ensemble": spec.name, "ensemble_version": spec.version, "kind": spec.kind,
                    "members": loaded.ensemble.members, "mirror_view": spec.mirror_view, "join": list(spec.join),
                    "member_maps": loaded.ensemble.member_maps, "licence": spec.licence,
                    "manifest": str(loaded.manifest_path) if loaded.manifest_path else None,
                    "manifest_sha256": loaded.manifest_sha256, "device": str(loaded.ensemble.device)})
    return out


def export_bundle(folder: str | Path, volume: Volume, corrected: np.ndarray, session: Session | None,
                  loaded: "LoadedEnsemble | None", statuses: dict[int, str], volume_name: str,
                  fat: Volume | None = None, dicom_source: list[Path] | None = None) -> Path:
    """Write the bundle for canonical ``corrected`` labels into ``folder``; returns its path."""
    from ..outputs.bundle import write_bundle  # noqa: PLC0415 - heavy (plots); only when exporting

    ran = session is not None and session.runs > 0
    return write_bundle(
        Path(folder).expanduser(), volume, corrected.astype(np.uint8),
        prediction=session.prediction if ran else None,
        probability=session.probability if ran else None,
        uncertainty_total=session.total if ran else None,
        uncertainty_epistemic=session.epistemic if ran else None,
        prompts=session.current_prompts() if session is not None else [],
        interaction_log=list(session.log) if session is not None else [],
        provenance=provenance(loaded, volume_name, statuses),
        fat=fat,
        member_masks=session.member_masks if ran else None,
        dicom_source=dicom_source,
        segment_status=statuses,
    )
