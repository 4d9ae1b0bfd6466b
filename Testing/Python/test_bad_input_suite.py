"""Bad-input suite, CLI part: every subcommand fed broken inputs must end in ONE clear line (exit code 2),
leave no partial output and run no planted code. Recorded in the one table (``bad_input_table``) that
is printed at the end with the scene-bridge and web cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from bad_input_table import record
from musclesam_test_helpers import damage_ensemble, write_random_decoder_ensemble
from MuscleSAMLib.cli.main import main

def _img(path: Path, arr: np.ndarray, **kw) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(arr, **kw), str(path))
    return path


def _good_image(tmp: Path) -> Path:
    return _img(tmp / "good.nii.gz", np.random.default_rng(0).uniform(1, 100, (3, 40, 40)).astype(np.float32))


def _boxes(tmp: Path, boxes: list | str) -> Path:
    p = tmp / "boxes.json"
    p.write_text(boxes if isinstance(boxes, str) else json.dumps({"boxes": boxes}))
    return p


GOOD_BOX = {"label": 3, "slice": 1, "xyxy": [5, 5, 20, 20]}


def _manifest_variant(tmp: Path, change: str) -> Path:
    return damage_ensemble(write_random_decoder_ensemble(tmp / "w", members=2), change, tmp / "PWNED")


# name -> builds argv from tmp folder; expected fragment of the one-line error
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing image": (lambda t: ["segment", str(t / "nope.nii.gz"), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "file not found"),
    "empty image": (lambda t: ["segment", str(_empty(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "file is empty"),
    "truncated image": (lambda t: ["segment", str(_truncated(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "truncated"),
    "corrupt image": (lambda t: ["segment", str(_corrupt(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "cannot read image"),
    "2D image": (lambda t: ["segment", str(_img(t / "flat.nrrd", np.ones((8, 8), np.float32))), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "expected a 3D image"),
    "4D image": (lambda t: ["segment", str(_img(t / "t.nii.gz", np.ones((2, 3, 8, 8), np.float32), isVector=False)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "expected a 3D image"),
    "vector image": (lambda t: ["segment", str(_img(t / "v.mha", np.ones((3, 8, 8, 3), np.float32), isVector=True)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "scalar image"),
    "complex image": (lambda t: ["segment", str(_img(t / "c.mha", np.ones((3, 8, 8), np.complex64))), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "scalar image"),
    "NaN voxels": (lambda t: ["segment", str(_nan(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "NaN/inf"),
    "single sagittal slice": (lambda t: ["segment", str(_sagittal(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "a single sagittal slice (size (1, 40, 30))"),
    "inf voxels": (lambda t: ["segment", str(_inf(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "NaN/inf"),
    "huge dimensions (header only)": (lambda t: ["segment", str(_huge(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "above the limit"),
    "fat/water on different grids": (lambda t: ["segment", str(_good_image(t)), "--fat", str(_shifted(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o")], "different grids"),
    "empty boxes file": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, "")), "--out", str(t / "o")], "not a valid boxes JSON"),
    "only degenerate box": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [{"label": 3, "slice": 1, "xyxy": [5, 5, 5, 5]}])), "--out", str(t / "o")], "no usable box"),
    "only inverted box": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [{"label": 3, "slice": 1, "xyxy": [20, 20, 5, 5]}])), "--out", str(t / "o")], "negative size"),
    "only outside box": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [{"label": 3, "slice": 1, "xyxy": [500, 500, 600, 600]}])), "--out", str(t / "o")], "outside the image"),
    "only non-axial box": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_nonaxial(t)), "--out", str(t / "o")], "one axial slice"),
    "only unknown label": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [{"label": 99, "slice": 1, "xyxy": [5, 5, 20, 20]}])), "--out", str(t / "o")], "unknown muscle label"),
    "manifest: missing member": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o"), "--manifest", str(_manifest_variant(t, "missing_member"))], "member1.safetensors"),
    "manifest: wrong checksum": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o"), "--manifest", str(_manifest_variant(t, "wrong_checksum"))], "sha256"),
    "manifest: wrong architecture": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o"), "--manifest", str(_manifest_variant(t, "wrong_architecture"))], "does not match"),
    "manifest: pickled code in .pth": (lambda t: ["segment", str(_good_image(t)), "--boxes", str(_boxes(t, [GOOD_BOX])), "--out", str(t / "o"), "--manifest", str(_manifest_variant(t, "pickled_code"))], "Python objects other than tensors"),
    "evaluate: labels on another grid": (lambda t: ["evaluate", str(_good_image(t)), str(_shifted(t)), "--out", str(t / "o")], "different grids"),
    "export: corrections on another grid": (lambda t: ["export", str(_good_image(t)), "--corrected", str(_shifted(t)), "--out", str(t / "o")], "different grids"),
    "export: name with NUL": (lambda t: ["export", str(_good_image(t)), "--corrected", str(_labels_like(t)), "--out", str(t / "o\x00x")], "invalid output path"),
    "export: into a file, not a folder": (lambda t: ["export", str(_good_image(t)), "--corrected", str(_labels_like(t)), "--out", str(_blocker(t) / "bundle")], "cannot write"),
}


def _empty(t: Path) -> Path:
    p = t / "empty.nii.gz"
    p.write_bytes(b"")
    return p


def _truncated(t: Path) -> Path:
    data = _good_image(t).read_bytes()
    p = t / "cut.nii.gz"
    p.write_bytes(data[: len(data) // 2])
    return p


def _corrupt(t: Path) -> Path:
    p = t / "corrupt.nrrd"
    p.write_bytes(b"NRRD0004\nnonsense: yes\n\n\x00\x01")
    return p


def _nan(t: Path) -> Path:
    arr = np.ones((3, 8, 8), np.float32)
    arr[1, 1, 1] = np.nan
    return _img(t / "nan.nrrd", arr)


def _sagittal(t: Path) -> Path:
    """40 x 30 voxels in the A-P / S-I plane, one voxel thick in L-R (index i is L-R)."""
    return _img(t / "sagittal.nrrd", np.random.default_rng(1).uniform(1, 9, (30, 40, 1)).astype(np.float32))


def _inf(t: Path) -> Path:
    arr = np.ones((3, 8, 8), np.float32)
    arr[2, 3, 3] = -np.inf
    return _img(t / "inf.mha", arr)


def _huge(t: Path) -> Path:
    """A NRRD header claiming 60000 x 60000 x 2000 float voxels (28 TB) over a few bytes of data."""
    p = t / "huge.nrrd"
    p.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 60000 60000 2000\nencoding: raw\nendian: little\n\n" + b"\0" * 64)
    return p


def _shifted(t: Path) -> Path:
    arr = np.ones((3, 40, 40), np.uint8)
    arr[1, 5:20, 5:20] = 3
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin((3.0, 0.0, 0.0))
    sitk.WriteImage(img, str(t / "shifted.nii.gz"))
    return t / "shifted.nii.gz"


def _labels_like(t: Path) -> Path:
    arr = np.zeros((3, 40, 40), np.uint8)
    arr[1, 5:20, 5:20] = 3
    return _img(t / "corrected.nii.gz", arr)


def _blocker(t: Path) -> Path:
    p = t / "a_file"
    p.write_text("x")
    return p


def _nonaxial(t: Path) -> Path:
    p = t / "boxes.json"
    p.write_text(json.dumps({"coordinates": "lps", "boxes": [{"label": 3, "corners": [[5, 5, 0], [20, 20, 2]]}]}))
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys):
    build, expected = CASES[case]
    argv = build(tmp_path)
    with record("CLI", case):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, f"exit code {code}, stderr: {err}"
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert expected in err, err
        assert not (tmp_path / "o").exists(), "partial output left behind"
        assert not (tmp_path / "PWNED").exists(), "planted code ran"
