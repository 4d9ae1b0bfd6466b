"""Each ensemble member's own mask of every muscle, stored compactly beside a segmentation.

``musclesam segment`` writes ``member_masks.npz`` so a later ``musclesam export`` can give the
prediction's biomarkers their member intervals (the bundle recomputes them, with the fat image too).

Format (numpy ``.npz``, no pickled objects; read with ``allow_pickle=False``): per label ``L`` the
arrays ``L_box`` = (k0, k1, r0, r1, c0, c1), the half-open bounding box of the union of the members'
masks in canonical (slices, rows, cols), and ``L_bits`` = ``np.packbits`` of the (M, k, r, c) bool
crop; plus ``shape`` = the canonical shape and ``members`` = M.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError


def write_member_masks(path: str | os.PathLike, masks: Mapping[int, np.ndarray], shape: tuple[int, int, int]) -> Path:
    """Write ``masks`` ({label: (M, slices, rows, cols) bool}) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {"shape": np.asarray(shape, np.int64)}
    members = 0
    for label, m in masks.items():
        members = int(m.shape[0])
        union = m.any(axis=0)
        if not union.any():
            continue
        idx = [np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        box = np.array([v for i in idx for v in (i[0], i[-1] + 1)], np.int64)
        crop = m[:, box[0]:box[1], box[2]:box[3], box[4]:box[5]]
        arrays[f"{int(label)}_box"] = box
        arrays[f"{int(label)}_bits"] = np.packbits(crop.ravel())
    arrays["members"] = np.asarray(members, np.int64)
    dest = Path(path)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return dest


def read_member_masks(path: str | os.PathLike, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Read :func:`write_member_masks`'s file for a canonical ``shape``; a wrong or broken file is an InputError."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            stored = tuple(int(v) for v in z["shape"])
            if stored != tuple(shape):
                raise InputError(f"{p}: member masks are for shape {stored}, the image is {tuple(shape)}; "
                                 "use the segment output folder of this image")
            m = int(z["members"])
            out: dict[int, np.ndarray] = {}
            for key in z.files:
                if not key.endswith("_box"):
                    continue
                label = int(key[:-4])
                k0, k1, r0, r1, c0, c1 = (int(v) for v in z[key])
                dims = (m, k1 - k0, r1 - r0, c1 - c0)
                bits = np.unpackbits(z[f"{label}_bits"], count=int(np.prod(dims))).astype(bool).reshape(dims)
                full = np.zeros((m, *shape), bool)
                full[:, k0:k1, r0:r1, c0:c1] = bits
                out[label] = full
            return out
    except InputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{p}: member masks file is corrupt ({exc}); run musclesam segment again") from None
