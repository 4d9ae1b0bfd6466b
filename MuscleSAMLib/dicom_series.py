"""Choosing and checking a DICOM series in a folder (GDCM through SimpleITK), before it is read.

A Dixon export puts water and fat (and often more) series in one folder, and a study folder keeps
each series in a sub-folder. Series are found in the folder and every sub-folder; with more than one,
the user picks one by UID or description (``--series``) and the message lists what is there. A series
whose slices are not evenly spaced (a missing slice, two images at one position such as water and fat
under one series UID) is refused: ITK would stack it onto a uniform grid, shifting slices and volumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SPACING_TOLERANCE = 0.01  # relative difference between slice gaps that counts as uneven


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series: its UID, description, and files in GDCM's slice order."""

    uid: str
    description: str
    files: tuple[str, ...]

    def label(self) -> str:
        return f"{self.uid} '{self.description}' ({len(self.files)} files)"


def _tag(path: str, key: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
    except RuntimeError:
        return ""


def find_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM series in ``folder`` and its sub-folders (files of a series may span sub-folders)."""
    root = str(folder)
    uids: list[str] = []
    for here, dirs, _ in os.walk(root):
        dirs.sort()
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(here):
            if uid not in uids:
                uids.append(uid)
    out = []
    for uid in uids:
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid, False, True))
        if files:
            out.append(SeriesInfo(uid, _tag(files[0], "0008|103e"), files))
    return out


def select_series(folder: str | os.PathLike, series: str | None = None) -> SeriesInfo:
    """The series ``series`` (UID or description, case-insensitive) in ``folder``, or its only series."""
    found = find_series(folder)
    if not found:
        raise InputError(f"{folder}: folder holds no DICOM series (sub-folders searched too)")
    listing = "; ".join(s.label() for s in found[:8]) + (f"; and {len(found) - 8} more" if len(found) > 8 else "")
    if series is None:
        if len(found) > 1:
            raise InputError(f"{folder}: holds {len(found)} DICOM series, choose one with --series UID or description: {listing}")
        return found[0]
    match = [s for s in found if s.uid == series] or [s for s in found if s.description.lower() == series.strip().lower()]
    if len(match) != 1:
        why = "no series matches" if not match else f"{len(match)} series match"
        raise InputError(f"{folder}: {why} --series {series!r}; series there: {listing}")
    return match[0]


def check_slice_spacing(folder: str | os.PathLike, files: tuple[str, ...] | list[str]) -> None:
    """Refuse slices that are not evenly spaced along the slice normal (module docstring)."""
    if len(files) < 3:
        return
    orient = [float(v) for v in _tag(files[0], "0020|0037").replace(",", "\\").split("\\") if v.strip()]
    if len(orient) != 6:
        return  # no geometry to check (ITK reads it as given)
    normal = np.cross(orient[:3], orient[3:])
    pos = []
    for f in files:
        vals = [float(v) for v in _tag(f, "0020|0032").split("\\") if v.strip()]
        if len(vals) != 3:
            return
        pos.append(float(np.dot(vals, normal)))
    d = np.sort(np.asarray(pos))
    gaps = np.diff(d)
    step = float(np.median(gaps))
    if step <= 1e-3 or gaps.min() <= 1e-3 * max(step, 1e-3):
        n = int((gaps <= 1e-3 * max(step, 1e-3)).sum())
        raise InputError(f"{folder}: {n} pair(s) of images lie at the same slice position in one series (e.g. water and "
                         "fat under one series UID); export each image type as its own series, then choose it with --series")
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * step:
        at = float(d[int(np.argmax(gaps))])
        raise InputError(f"{folder}: slices are unevenly spaced ({gaps.min():.2f} to {gaps.max():.2f} mm apart, a missing "
                         f"slice after position {at:.1f} mm?); it cannot be read onto a regular grid without shifting slices: "
                         "export the complete series or resample it first")
