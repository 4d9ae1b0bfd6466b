"""Read and check a corrections bundle for learning: files, JSON, label and edit maps, the image it was made on.

:func:`read_bundle` refuses (one-line :class:`InputError`) a bundle missing files, with corrupt JSON or
images, an edit map that disagrees with prediction vs correction, or whose image moved or lies on
another grid; :func:`bundle_sha256` identifies a bundle's content in the learning record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..models.safe_load import sha256_file
from .bundle import EDIT_CODES, check_bundle, edit_map


@dataclass(frozen=True)
class CorrectedCase:
    """One corrected bundle, checked: its image, its corrected labels and their checksums."""

    bundle: Path
    name: str
    image: Path
    labels: Path
    bundle_sha256: str
    labels_sha256: str
    image_sha256: str
    edited_voxels: int | None

    def record(self) -> dict[str, Any]:
        """The training-record form (names and checksums)."""
        return {"bundle": str(self.bundle), "name": self.name, "bundle_sha256": self.bundle_sha256,
                "corrected_labels_sha256": self.labels_sha256, "image": str(self.image),
                "image_sha256": self.image_sha256, "edited_voxels": self.edited_voxels}


def bundle_sha256(path: Path) -> str:
    """sha256 over the sorted (relative name, file sha256) of every non-hidden file of a bundle."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: corrupted bundle file (not readable JSON: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: corrupted bundle file (expected a JSON object)")
    return data


def _label_array(path: Path, image, what: str) -> np.ndarray:
    """A label map of the bundle on ``image``'s grid as uint8 (corrupt or non-integer values refused)."""
    from ..volumes import check_same_grid, read_volume

    vol = read_volume(path, allow_labels=True)
    check_same_grid(image, vol, "image", f"bundle {what}")
    arr = vol.canonical_array
    rounded = np.rint(arr)
    if arr.size and (np.abs(arr - rounded).max() > 1e-3 or rounded.min() < 0 or rounded.max() > 255):
        raise InputError(f"{path}: corrupted {what} (values must be whole numbers 0..255)")
    return rounded.astype(np.uint8)


def _resolve_image(bundle: Path, provenance: dict, image: str | os.PathLike | None) -> Path:
    if image is not None:
        p = Path(image).expanduser()
        if not p.exists():
            raise InputError(f"{p}: image given for bundle {bundle} not found")
        return p.resolve()
    src = provenance.get("image")
    if not isinstance(src, str) or not src or src.startswith("<"):
        raise InputError(f"{bundle}: provenance.json names no image file; pass the image with --image")
    p = Path(src).expanduser()
    for cand in (p, bundle / p) if not p.is_absolute() else (p,):
        if cand.exists():
            return cand.resolve()
    raise InputError(f"{bundle}: its image {src} is not found (moved?); pass the image with --image")


def read_bundle(path: str | os.PathLike, image: str | os.PathLike | None = None) -> CorrectedCase:
    """Check one corrections bundle for learning and return what training needs.

    ``image`` overrides the image named in provenance.json (when the file moved). Raises a one-line
    :class:`InputError` (a :class:`GeometryError` for a different grid) for anything unusable.
    """
    from ..volumes import read_volume

    p = Path(path).expanduser()
    check_bundle(p)
    prov = _json_object(p / "provenance.json")
    report = _json_object(p / "report.json")
    _json_object(p / "prompts.json")
    img_path = _resolve_image(p, prov, image)
    img = read_volume(img_path)
    check_bundle(p, img)  # grid of the corrected labels
    image_sha = sha256_file(img_path) if img_path.is_file() else ""
    recorded = prov.get("image_sha256")
    if isinstance(recorded, str) and recorded and image_sha and recorded != image_sha:
        raise InputError(f"{img_path}: this image changed since bundle {p} was exported (sha256 differs from the one in its "
                         "provenance.json); the corrected labels were drawn on the old image: pass the original with --image")
    corrected = _label_array(p / "corrected_labels.nii.gz", img, "corrected labels")
    if not (corrected > 0).any():
        raise InputError(f"{p / 'corrected_labels.nii.gz'}: no muscle labels (all zero); nothing to learn from")
    edited = None
    has_pred, has_edits = (p / "prediction_labels.nii.gz").is_file(), (p / "edit_map.nii.gz").is_file()
    if has_pred and not has_edits:
        raise InputError(f"{p}: incomplete bundle, missing edit_map.nii.gz (it has a prediction)")
    if has_edits:
        edits = _label_array(p / "edit_map.nii.gz", img, "edit map")
        bad = sorted(set(np.unique(edits).tolist()) - set(EDIT_CODES))
        if bad:
            raise InputError(f"{p / 'edit_map.nii.gz'}: corrupted edit map (codes {bad[:5]} not in {sorted(EDIT_CODES)})")
        if has_pred:
            pred = _label_array(p / "prediction_labels.nii.gz", img, "prediction")
            if not np.array_equal(edit_map(pred, corrected), edits):
                raise InputError(f"{p / 'edit_map.nii.gz'}: corrupted edit map (does not match prediction vs corrected labels)")
        edited = int((edits > 0).sum())
    name = report.get("name") if isinstance(report.get("name"), str) else None
    name = name or f"{p.name}"
    return CorrectedCase(p.resolve(), name, img_path, (p / "corrected_labels.nii.gz").resolve(), bundle_sha256(p),
                         sha256_file(p / "corrected_labels.nii.gz"), image_sha, edited)
