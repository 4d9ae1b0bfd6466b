"""Which DICOM files a volume node was loaded from (desktop Slicer's DICOM database), for DICOM SEG export.

Slicer's DICOM loader tags a scalar volume with ``DICOM.instanceUIDs`` (space-separated SOP Instance
UIDs); ``slicer.dicomDatabase.fileForInstance`` maps each UID to its file. Without a DICOM database
(slicer-core, or a volume not loaded from DICOM) there are no files and no SEG is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSTANCE_UIDS_ATTR = "DICOM.instanceUIDs"


def dicom_files_of(volume_node: Any) -> list[Path] | None:
    """The node's source DICOM files, or None when it was not loaded from DICOM or a file is gone."""
    uids = (volume_node.GetAttribute(INSTANCE_UIDS_ATTR) or "").split()
    if not uids:
        return None
    import slicer  # noqa: PLC0415 - the scene bridge imports slicer lazily

    database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return None
    files = [Path(database.fileForInstance(uid)) for uid in uids]
    return files if all(f.is_file() for f in files) else None
