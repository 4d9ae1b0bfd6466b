"""Read a ``musclesam segment`` output folder for ``export``: the prediction, its maps, prompts and provenance.

Everything is checked against the image being exported: the folder must be a complete segment result
of *this* image (its report records the image's sha256), on its grid, with muscle labels only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.types import BoxPrompt
from ..errors import InputError
from ..hashing import sha256_of_file
from ..json_files import json_object
from ..label_maps import muscle_label_array
from ..result_folders import check_published
from ..volumes import Volume, check_same_grid, read_volume

MAPS = (("probability", "probability.nii.gz"), ("uncertainty_total", "uncertainty_total.nii.gz"),
        ("uncertainty_epistemic", "uncertainty_epistemic.nii.gz"))


def _check_same_image(pdir: Path, report: dict, image: Volume) -> None:
    """Refuse a prediction made on another image (same grid or not): by sha256 when recorded, else by path."""
    src = Path(image.source)
    recorded = report.get("image_sha256")
    if isinstance(recorded, str) and recorded and src.is_file():
        if recorded != sha256_of_file(src):
            raise InputError(f"{pdir}: this prediction was made on another image than {src} (the sha256 in its report.json "
                             "differs); give the `musclesam segment` output of this image")
        return
    named = report.get("image")
    if isinstance(named, str) and Path(named).exists() and src.exists() and Path(named).resolve() != src.resolve():
        raise InputError(f"{pdir}: this prediction was made on {named}, not on {src}; give the `musclesam segment` output "
                         "of this image")


def _prompts(path: Path) -> list[BoxPrompt]:
    doc = json_object(path, "prompts file")
    out = []
    for n, b in enumerate(doc.get("canonical", [])):
        try:
            xyxy = tuple(int(v) for v in b["xyxy_half_open"])
            if len(xyxy) != 4:
                raise ValueError("xyxy_half_open needs 4 numbers")
            points = tuple((int(x), int(y), int(sign)) for x, y, sign in b.get("points", []))
            out.append(BoxPrompt(int(b["label"]), int(b["slice"]), xyxy, str(b.get("source", "")), points))
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"{path}: box #{n} of 'canonical' is not usable ({what}); restore the file written by "
                             "`musclesam segment` or remove it") from None
    return out


def read_prediction_folder(pdir: str | Path, image: Volume) -> dict[str, Any]:
    """Keyword arguments for :func:`~MuscleSAMLib.outputs.bundle.write_bundle` from a segment output folder."""
    pdir = Path(pdir)
    if not (pdir / "labels.nii.gz").is_file():
        raise InputError(f"{pdir}: not a `musclesam segment` output folder (no labels.nii.gz)")
    check_published(pdir, "segment")
    report = json_object(pdir / "report.json", "segment report") if (pdir / "report.json").exists() else {}
    _check_same_image(pdir, report, image)
    pred = read_volume(pdir / "labels.nii.gz", allow_labels=True)
    check_same_grid(image, pred, "image", "prediction")
    kw: dict[str, Any] = {"prediction": muscle_label_array(pred, "prediction")}
    for key, fname in MAPS:
        if (pdir / fname).is_file():
            v = read_volume(pdir / fname, allow_labels=True)
            check_same_grid(image, v, "image", fname)
            kw[key] = v.canonical_array
    if (pdir / "member_masks.npz").is_file():  # the prediction's biomarkers get member intervals
        from ..outputs.member_masks import read_member_masks

        kw["member_masks"] = read_member_masks(pdir / "member_masks.npz", kw["prediction"].shape)
    if (pdir / "prompts.json").exists():
        kw["prompts"] = _prompts(pdir / "prompts.json")
    if report:
        kw["provenance"] = {"prediction": report.get("provenance")}
    return kw
