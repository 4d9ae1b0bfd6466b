"""Broken image files for the web bad-input cases: name -> (writer into a folder, fragment of the page message)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk


def _write(path: Path, arr: np.ndarray, vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=vector), str(path))
    return path


def good(folder: Path, name: str = "good.nii.gz") -> Path:
    """A small valid 3D image (to show that a refusal comes from the path rule, not the reader)."""
    return _write(folder / name, np.random.default_rng(0).uniform(1, 100, (3, 24, 24)).astype(np.float32))


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(folder: Path) -> Path:
    data = good(folder, "whole.nii.gz").read_bytes()
    return _bytes(folder / "cut.nii.gz", data[: len(data) // 2])


def _nan(folder: Path) -> Path:
    arr = np.ones((3, 8, 8), np.float32)
    arr[1, 2, 3] = np.nan
    return _write(folder / "nan.nrrd", arr)


BAD_IMAGES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing image": (lambda f: f / "absent.nii.gz", "file not found"),
    "empty image": (lambda f: _bytes(f / "empty.nii.gz", b""), "file is empty"),
    "truncated image": (_truncated, "truncated"),
    "corrupt image": (lambda f: _bytes(f / "corrupt.nrrd", b"NRRD0004\nnonsense: yes\n\n\x00\x01"), "cannot read image"),
    "2D image": (lambda f: _write(f / "flat.nrrd", np.ones((8, 8), np.float32)), "expected a 3D image"),
    "4D image": (lambda f: _write(f / "four.nii.gz", np.ones((2, 3, 8, 8), np.float32)), "expected a 3D image"),
    "vector image": (lambda f: _write(f / "vector.mha", np.ones((3, 8, 8, 3), np.float32), vector=True), "scalar image"),
    "complex image": (lambda f: _write(f / "complex.mha", np.ones((3, 8, 8), np.complex64)), "scalar image"),
    "NaN voxels": (_nan, "NaN/inf"),
    "label map as image": (lambda f: _write(f / "labels.nii.gz", (np.arange(3 * 24 * 24).reshape(3, 24, 24) % 12).astype(np.uint8)),
                           "looks like a label map"),
}
