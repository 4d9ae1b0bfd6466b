"""What ITK does not say about a NIfTI header: stored pixel size, missing spacing, qform vs sform.

ITK reads NIfTI through nifti_clib, which silently turns ``pixdim = 0`` into 1 mm and picks one of
qform/sform when both are set. Both give wrong volumes or mirrored sides without a word, so the raw
header (NIfTI-1 or NIfTI-2, either byte order) is parsed here from its first bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# (size, int/float formats and offsets) of NIfTI-1 and NIfTI-2 headers
_LAYOUTS = {
    348: {"datatype": (70, "h"), "bitpix": (72, "h"), "dim": (40, "8h"), "pixdim": (76, "8f"), "scl_slope": (112, "f"),
          "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "6f"), "srow": (280, "12f")},
    540: {"datatype": (12, "h"), "bitpix": (14, "h"), "dim": (16, "8q"), "pixdim": (104, "8d"), "scl_slope": (176, "d"),
          "qform_code": (344, "i"), "sform_code": (348, "i"), "quatern": (352, "6d"), "srow": (400, "12d")},
}


@dataclass(frozen=True)
class NiftiHeader:
    """The header fields MuscleSAM checks (spatial units as stored; affines map voxel -> RAS mm)."""

    bitpix: int
    dim: tuple[int, ...]
    pixdim: tuple[float, ...]
    qform_code: int
    sform_code: int
    qform: np.ndarray  # 3x4
    sform: np.ndarray  # 3x4


def parse_nifti_header(head: bytes) -> NiftiHeader | None:
    """Parse the first bytes of a NIfTI file; None when they are not a NIfTI-1/2 header."""
    for order in ("<", ">"):
        if len(head) < 4:
            return None
        size = struct.unpack(order + "i", head[:4])[0]
        layout = _LAYOUTS.get(size)
        if layout is None or len(head) < size:
            continue
        f = {k: struct.unpack_from(order + fmt, head, off) for k, (off, fmt) in layout.items()}
        pixdim = tuple(float(v) for v in f["pixdim"])
        return NiftiHeader(int(f["bitpix"][0]), tuple(int(v) for v in f["dim"]), pixdim, int(f["qform_code"][0]),
                           int(f["sform_code"][0]), _qform(f["quatern"], pixdim), np.array(f["srow"], float).reshape(3, 4))
    return None


def _qform(quatern: tuple[float, ...], pixdim: tuple[float, ...]) -> np.ndarray:
    """The qform affine (NIfTI-1 standard, method 2) as 3x4."""
    b, c, d, qx, qy, qz = (float(v) for v in quatern)
    a = 1.0 - (b * b + c * c + d * d)
    a = np.sqrt(a) if a > 1e-7 else 0.0
    r = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    scale = np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
    return np.hstack([r @ scale, [[qx], [qy], [qz]]])


def missing_spacing(h: NiftiHeader) -> str | None:
    """``pixdim[i]`` (i = 1..3) that is zero, negative or not a number, named; else None."""
    for i in range(1, 4):
        v = h.pixdim[i]
        if not (np.isfinite(v) and v > 0) and h.dim[i] > 0:
            return f"pixdim[{i}] = {v:g}"
    return None


def _affine_of(image) -> np.ndarray:
    """ITK image geometry as a voxel -> RAS 3x4 affine."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3) @ np.diag(image.GetSpacing())
    flip = np.diag([-1.0, -1.0, 1.0])
    return np.hstack([flip @ d, (flip @ np.asarray(image.GetOrigin(), float)).reshape(3, 1)])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a[:, :3], b[:, :3], atol=1e-3 * max(1.0, float(np.abs(a[:, :3]).max())))
                and np.allclose(a[:, 3], b[:, 3], atol=0.05))


def transform_disagreement(h: NiftiHeader, image) -> str | None:
    """When qform and sform are both set and differ: a sentence saying how and which one ``image`` was
    read through; else None."""
    if h.qform_code <= 0 or h.sform_code <= 0 or _same(h.qform, h.sform):
        return None
    mirrored = np.sign(np.linalg.det(h.qform[:, :3])) != np.sign(np.linalg.det(h.sform[:, :3]))
    how = "are mirror images of each other (left and right swapped)" if mirrored else "disagree"
    read = _affine_of(image)
    used = "sform" if _same(read, h.sform) else "qform" if _same(read, h.qform) else None
    choice = f"it was read through the {used}" if used else "it was read through neither exactly"
    return (f"the header's qform and sform {how}; {choice} (ITK's rule): check left/right on the image, or fix the "
            "header so both agree")
