"""Bad-input table, part 2 (issue 13): inputs as real users and real files give them, where the old code
destroyed the user's files or gave wrong results with exit code 0. Each case states its expected outcome
(refused with one line naming the file / accepted with a warning / accepted and right) and is recorded
in the one bad-input table under "CLI".
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bad_input_table import record
from musclesam_test_helpers import ROOT, write_random_decoder_ensemble
from MuscleSAMLib.cli.main import main

MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    """A small two-leg image, labels, boxes and a random-weight ensemble (outside the test's folders)."""
    t = tmp_path_factory.mktemp("userdata")
    rng = np.random.default_rng(0)
    arr = rng.uniform(1, 20, (3, 48, 64)).astype(np.float32)
    arr[:, 8:40, 4:28] += 100  # right leg (low columns), a gap, the left leg
    arr[:, 8:40, 36:60] += 100
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.9, 0.9, 5.0))
    sitk.WriteImage(image, str(t / "water.nii.gz"))
    lab = np.zeros(arr.shape, np.uint8)
    lab[1, 10:30, 6:26] = 3
    lab[1, 10:30, 38:58] = 3
    labels = sitk.GetImageFromArray(lab)
    labels.CopyInformation(image)
    sitk.WriteImage(labels, str(t / "labels.nii.gz"))
    (t / "boxes.json").write_text(json.dumps({"boxes": [{"label": 3, "slice": 1, "xyxy": [6, 10, 25, 29]},
                                                        {"label": 3, "slice": 1, "xyxy": [38, 10, 57, 29]}]}))
    return {"dir": t, "image": t / "water.nii.gz", "labels": t / "labels.nii.gz", "boxes": t / "boxes.json",
            "manifest": write_random_decoder_ensemble(t / "w", members=2)}


def _segment(case, out: Path, *extra: str) -> list[str]:
    return ["segment", str(case["image"]), "--boxes", str(case["boxes"]), "--out", str(out),
            "--manifest", str(case["manifest"]), "--quiet", *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def _user_folder(t: Path, case) -> Path:
    """A folder as users keep them: the image, their own labels, notes."""
    d = t / "data"
    d.mkdir()
    (d / "water.nii.gz").write_bytes(case["image"].read_bytes())
    (d / "labels.nii.gz").write_bytes(case["labels"].read_bytes())
    (d / "clinical_notes.txt").write_text("patient notes")
    return d


# ------------------------------------------------------------------ 1-3: never destroy the user's files


def test_export_into_a_folder_of_user_files_is_refused_and_changes_nothing(case, tmp_path, capsys):
    with record("CLI", "export --out a folder holding the user's files: refused, files unchanged"):
        d = _user_folder(tmp_path, case)
        before = _snapshot(d)
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(case["labels"]), "--out", str(d)],
                 "holds files MuscleSAM did not write", "clinical_notes.txt", "labels.nii.gz")
        assert _snapshot(d) == before


def test_segment_into_a_data_folder_never_overwrites_the_users_labels(case, tmp_path, capsys):
    with record("CLI", "segment --out the data folder (user's labels.nii.gz): refused, files unchanged"):
        d = _user_folder(tmp_path, case)
        before = _snapshot(d)
        _refused(capsys, _segment(case, d), "holds files MuscleSAM did not write", "labels.nii.gz")
        assert _snapshot(d) == before


def test_a_previous_result_is_replaced_whole_but_not_by_another_kind(case, tmp_path, capsys):
    with record("CLI", "segment twice into one folder: replaced as a whole; export there: refused"):
        out = tmp_path / "out"
        assert main(_segment(case, out)) == 0
        assert main(_segment(case, out, "--threshold", "0.3")) == 0
        assert json.loads((out / "report.json").read_text())["threshold"] == 0.3
        capsys.readouterr()
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(case["labels"]), "--out", str(out)],
                 "holds a `musclesam segment` result")
        (out / "my_notes.txt").write_text("mine")  # the user adds a file to a result folder: it is theirs now
        _refused(capsys, _segment(case, out), "my_notes.txt")
        assert (out / "my_notes.txt").read_text() == "mine"


def test_a_folder_holding_only_hidden_user_files_is_not_taken_for_empty(tmp_path):
    from MuscleSAMLib.errors import InputError
    from MuscleSAMLib.result_folders import check_replaceable

    d = tmp_path / "mine"
    d.mkdir()
    (d / ".tmp-notes").write_text("a hidden file of the user's, named like a MuscleSAM temp file")
    with record("CLI", "a folder holding only a hidden '.tmp-' file of the user's: refused (no marker)"):
        with pytest.raises(InputError, match=r"\.tmp-notes"):
            check_replaceable(d, "segment")


def test_export_out_dot_is_refused_in_one_line(case, tmp_path, capsys, monkeypatch):
    with record("CLI", "export --out . : refused in one line (no traceback)"):
        monkeypatch.chdir(tmp_path)
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(case["labels"]), "--out", "."], "current folder")


# ------------------------------------------------------------------ 4: DICOM folders


def _dicom(folder: Path, arr: np.ndarray, uid: str, description: str, z: list[float] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    z = z if z is not None else [5.0 * k for k in range(arr.shape[0])]
    for k, zk in enumerate(z):
        sl = sitk.GetImageFromArray(arr[k % arr.shape[0]][None].astype(np.int16))[:, :, 0]
        sl.SetSpacing((0.9, 0.9))
        tags = {"0008|0016": MR, "0008|0018": f"{uid}.{k + 1}", "0010|0010": "Phantom", "0010|0020": "P1",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid, "0008|103e": description,
                "0008|0060": "MR", "0020|0032": f"0\\0\\{zk:.3f}", "0020|0013": str(k + 1),
                "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "5", "0028|0030": "0.9\\0.9"}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def _dixon_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    water = rng.uniform(50, 400, (5, 24, 20))
    return water, water * 0.2 + 10


def test_dicom_folder_with_water_and_fat_series_needs_a_choice(tmp_path, capsys):
    from MuscleSAMLib.volumes import read_volume

    water, fat = _dixon_arrays()
    d = tmp_path / "dixon"
    _dicom(d, fat, "1.2.3.100", "FAT")  # listed first by GDCM or not: it must not matter
    _dicom(d, water, "1.2.3.200", "WATER")
    with record("CLI", "DICOM folder with water and fat series: refused, series listed"):
        _refused(capsys, ["segment", str(d), "--boxes", "b.json", "--out", str(tmp_path / "o")],
                 "holds 2 DICOM series", "--series", "'WATER'", "'FAT'")
    with record("CLI", "DICOM folder with two series and --series WATER: the water series is read"):
        vol = read_volume(d, series="water")
        assert np.allclose(np.sort(vol.canonical_array.ravel()), np.sort(water.astype(np.int16).ravel()))
        assert read_volume(d, series="1.2.3.100").canonical_array.mean() < vol.canonical_array.mean()


def test_dicom_study_folder_with_the_series_in_a_subfolder_is_read(tmp_path):
    from MuscleSAMLib.volumes import read_volume

    water, _ = _dixon_arrays()
    _dicom(tmp_path / "study" / "series1", water, "1.2.3.300", "WATER")
    with record("CLI", "DICOM study folder, series in a sub-folder: found and read"):
        assert read_volume(tmp_path / "study").canonical_array.shape == water.shape


@pytest.mark.parametrize("what, z, needle", [
    ("missing slice", [0.0, 5.0, 10.0, 20.0, 25.0], "unevenly spaced"),
    ("uneven spacing", [0.0, 5.0, 11.0, 15.0, 20.0], "unevenly spaced"),
    ("water and fat under one series UID", [0.0, 0.0, 5.0, 5.0, 10.0, 10.0], "same slice position"),
])
def test_dicom_series_that_is_not_a_regular_grid_is_refused(tmp_path, capsys, what, z, needle):
    water, _ = _dixon_arrays()
    d = _dicom(tmp_path / "s", water, "1.2.3.400", "WATER", z)
    with record("CLI", f"DICOM series with {what}: refused (not stacked onto a uniform grid)"):
        _refused(capsys, ["segment", str(d), "--boxes", "b.json", "--out", str(tmp_path / "o")], str(d), needle)


# ------------------------------------------------------------------ 5, 10, 11: NIfTI headers and values


def _nifti_bytes(path: Path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())


def test_nifti_without_slice_spacing_is_refused(case, tmp_path, capsys):
    b = _nifti_bytes(case["image"])
    struct.pack_into("<f", b, 76 + 12, 0.0)  # pixdim[3] = 0
    (tmp_path / "nospacing.nii").write_bytes(bytes(b))
    with record("CLI", "NIfTI with pixdim[3] = 0: refused (not read as 1 mm)"):
        _refused(capsys, _segment(case, tmp_path / "o")[:1] + [str(tmp_path / "nospacing.nii")] + _segment(case, tmp_path / "o")[2:],
                 "nospacing.nii", "pixdim[3] = 0")


def test_nifti_whose_sform_mirrors_its_qform_is_read_with_the_choice_named(case, tmp_path, capsys):
    from MuscleSAMLib.errors import InputWarning
    from MuscleSAMLib.volumes import read_volume

    b = _nifti_bytes(case["image"])
    srow_x = list(struct.unpack_from("<4f", b, 280))
    struct.pack_into("<4f", b, 280, -srow_x[0], srow_x[1], srow_x[2], srow_x[3] + 60)  # left-right mirror
    struct.pack_into("<h", b, 254, 1)
    struct.pack_into("<h", b, 252, 1)
    p = tmp_path / "mirror.nii"
    p.write_bytes(bytes(b))
    with record("CLI", "NIfTI whose sform mirrors its qform: read, warning names which transform is used"):
        with pytest.warns(InputWarning, match=r"mirror images of each other.*read through the (qform|sform)"):
            read_volume(p)


def test_nifti_with_scl_slope_is_read_scaled(tmp_path):
    from MuscleSAMLib.volumes import read_volume

    img = sitk.GetImageFromArray(np.arange(3 * 16 * 16, dtype=np.int16).reshape(3, 16, 16))
    sitk.WriteImage(img, str(tmp_path / "raw.nii"))
    b = _nifti_bytes(tmp_path / "raw.nii")
    struct.pack_into("<2f", b, 112, 2.0, 10.0)  # scl_slope, scl_inter
    (tmp_path / "scaled.nii").write_bytes(bytes(b))
    with record("CLI", "NIfTI with scl_slope/scl_inter: accepted, values scaled (not 'truncated')"):
        vol = read_volume(tmp_path / "scaled.nii")
        assert vol.canonical_array.max() == pytest.approx(2.0 * (3 * 16 * 16 - 1) + 10.0)


def test_float64_image_with_huge_values_is_read_finite(tmp_path):
    from MuscleSAMLib.errors import InputWarning
    from MuscleSAMLib.volumes import read_volume

    arr = np.random.default_rng(0).uniform(1, 1000, (3, 16, 16)) * 1e36
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "big.nrrd"))
    with record("CLI", "float64 image with values x1e36: read (scaled, warned), no NaN/inf"):
        with pytest.warns(InputWarning, match="do not fit 32-bit floats"):
            vol = read_volume(tmp_path / "big.nrrd")
        canon = vol.canonical_array
        assert np.isfinite(canon).all()
        assert np.corrcoef(canon.ravel(), arr.transpose(0, 1, 2).ravel())[0, 1] > 0.999


# ------------------------------------------------------------------ 6: Dixon pairs


def test_dixon_pair_the_same_file_or_a_label_map_gets_a_warning(case, capsys):
    from MuscleSAMLib.errors import InputWarning
    from MuscleSAMLib.volumes import read_dixon_pair

    with record("CLI", "--fat = the water image: warning (fat fraction would be 0.5)"):
        with pytest.warns(InputWarning, match="same image"):
            read_dixon_pair(case["image"], case["image"])
    with record("CLI", "--fat = the label map: warning (fat fraction would be 0)"):
        with pytest.warns(InputWarning, match="like a label map"):
            read_dixon_pair(case["labels"], case["image"])


def test_swapped_dixon_pair_is_recognised_from_the_segmented_muscles():
    from MuscleSAMLib.dixon_checks import swapped_after_segmentation
    from MuscleSAMLib.sample_data import sample_case
    from MuscleSAMLib.volumes import read_volume

    c = sample_case()
    water, fat = read_volume(c.water).canonical_array, read_volume(c.fat).canonical_array
    labels = np.rint(read_volume(c.labels, allow_labels=True).canonical_array)
    with record("CLI", "fat and water swapped (real sample): warning; the right order: none"):
        assert swapped_after_segmentation(labels, fat, water) is None
        assert "look swapped" in swapped_after_segmentation(labels, water, fat)


# ------------------------------------------------------------------ 7: figures and --threshold


@pytest.mark.parametrize("value", ["1.5", "-1", "nan", "inf", "0", "1"])
def test_threshold_outside_zero_one_is_refused_at_the_parser(case, tmp_path, capsys, value):
    with record("CLI", f"--threshold {value}: refused by the argument parser"):
        with pytest.raises(SystemExit) as exc:
            main(_segment(case, tmp_path / "o", "--threshold", value))
        assert exc.value.code == 2
        assert "--threshold" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


def test_every_volume_figure_comes_from_the_written_label_map(case, tmp_path, capsys):
    import csv

    with record("CLI", "printed table, report.json, biomarkers.csv agree with labels.nii.gz; intervals hold them"):
        vols = {}
        for thr in ("0.49", "0.505"):  # the random members' probabilities lie around 0.5
            out = tmp_path / f"o{thr}"
            assert main(_segment(case, out, "--threshold", thr)) == 0
            printed = capsys.readouterr().out
            lab = sitk.ReadImage(str(out / "labels.nii.gz"))
            voxel_ml = float(np.prod(lab.GetSpacing())) / 1000
            arr = sitk.GetArrayFromImage(lab)
            report = json.loads((out / "report.json").read_text())
            assert report["threshold"] == float(thr)
            for label, m in report["per_muscle"].items():
                expected = float((arr == int(label)).sum()) * voxel_ml
                assert m["volume_ml"] == pytest.approx(expected)
                lo, hi = m["interval_minmax_ml"]
                assert lo <= m["volume_ml"] <= hi
                assert f"{expected:10.1f}" in printed
            vols[thr] = {k: m["volume_ml"] for k, m in report["per_muscle"].items()}
            with open(out / "biomarkers.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            assert rows
            for r in rows:
                cols = {k.lower(): v for k, v in r.items()}
                v = float(next(val for key, val in cols.items() if key.startswith("volume")))
                lo_key = next(k for k in cols if "volume" in k and ("low" in k or "min" in k))
                hi_key = next(k for k in cols if "volume" in k and ("high" in k or "max" in k))
                if cols[lo_key]:
                    assert float(cols[lo_key]) - 1e-6 <= v <= float(cols[hi_key]) + 1e-6, r
        assert vols["0.49"] and vols["0.49"] != vols["0.505"], "--threshold did not change the volumes"


# ------------------------------------------------------------------ 8, 9, 13: bundles and label maps


def _label_file(t: Path, case, values: np.ndarray | None = None, dtype=np.uint8, name: str = "lab.nii.gz") -> Path:
    ref = sitk.ReadImage(str(case["image"]))
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(case["labels"]))).astype(dtype) if values is None else values
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(t / name))
    return t / name


@pytest.mark.parametrize("value", [12, 20, 255, 259, -1])
def test_export_refuses_label_values_outside_the_muscle_table(case, tmp_path, capsys, value):
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(case["labels"]))).astype(np.int16)
    arr[2, 5:10, 5:10] = value
    lab = _label_file(tmp_path, case, arr, np.int16)
    with record("CLI", f"export --corrected with label value {value}: refused"):
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(lab), "--out", str(tmp_path / "b")],
                 "lab.nii.gz", str(value), "not in the muscle table")
        assert not (tmp_path / "b").exists()


def test_export_refuses_a_probability_map_as_corrected_labels(case, tmp_path, capsys):
    prob = np.random.default_rng(0).uniform(0, 1, sitk.ReadImage(str(case["image"])).GetSize()[::-1])
    p = _label_file(tmp_path, case, prob, np.float32, "prob.nii.gz")
    with record("CLI", "export --corrected = a float probability map: refused"):
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(p), "--out", str(tmp_path / "b")],
                 "prob.nii.gz", "not a label map")


def test_export_refuses_a_prediction_made_on_another_image(case, tmp_path, capsys):
    assert main(_segment(case, tmp_path / "pred")) == 0
    capsys.readouterr()
    other = tmp_path / "other.nii.gz"
    img = sitk.ReadImage(str(case["image"]))
    sitk.WriteImage(img * 1.1, str(other))  # same grid, other content
    with record("CLI", "export --prediction of another image on the same grid: refused"):
        _refused(capsys, ["export", str(other), "--corrected", str(case["labels"]), "--prediction", str(tmp_path / "pred"),
                          "--out", str(tmp_path / "b")], "made on another image")


@pytest.mark.parametrize("damage, needle", [
    ("prompts.json", "xyxy_half_open"),
    ("report.json", "not a valid segment report"),
])
def test_export_with_an_edited_prediction_folder_ends_in_one_line(case, tmp_path, capsys, damage, needle):
    assert main(_segment(case, tmp_path / "pred")) == 0
    capsys.readouterr()
    p = tmp_path / "pred" / damage
    if damage == "prompts.json":
        doc = json.loads(p.read_text())
        for b in doc["canonical"]:
            b.pop("xyxy_half_open")
        p.write_text(json.dumps(doc))
    else:
        p.write_text(p.read_text()[:40])  # truncated
    with record("CLI", f"export --prediction with an edited/truncated {damage}: one line"):
        _refused(capsys, ["export", str(case["image"]), "--corrected", str(case["labels"]), "--prediction",
                          str(tmp_path / "pred"), "--out", str(tmp_path / "b")], damage, needle)


def test_evaluate_refuses_an_mri_given_as_the_label_map(case, tmp_path, capsys):
    with record("CLI", "evaluate with the MRI as LABELS: refused at once (not one box per intensity)"):
        _refused(capsys, ["evaluate", str(case["image"]), str(case["image"]), "--out", str(tmp_path / "o"),
                          "--manifest", str(case["manifest"]), "--quiet"], "not a label map")


def test_evaluate_refuses_unknown_label_values(case, tmp_path, capsys):
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(case["labels"])))
    arr[0, 2:6, 2:6] = 42
    lab = _label_file(tmp_path, case, arr)
    with record("CLI", "evaluate with label values not in the table: refused"):
        _refused(capsys, ["evaluate", str(case["image"]), str(lab), "--out", str(tmp_path / "o"),
                          "--manifest", str(case["manifest"]), "--quiet"], "42", "not in the muscle table")


@pytest.mark.parametrize("change", ["fat image written over it", "rescaled x1.1"])
def test_learning_refuses_a_bundle_whose_image_changed(case, tmp_path, capsys, change):
    from MuscleSAMLib.outputs.corrected_cases import read_bundle
    from MuscleSAMLib.errors import InputError

    img = tmp_path / "img.nii.gz"
    img.write_bytes(case["image"].read_bytes())
    assert main(["export", str(img), "--corrected", str(case["labels"]), "--out", str(tmp_path / "b")]) == 0
    read_bundle(tmp_path / "b")  # as exported: accepted
    original = sitk.ReadImage(str(img))
    changed = original * 1.1 if change.startswith("rescaled") else original * 0.2 + 3
    sitk.WriteImage(changed, str(img))
    with record("CLI", f"train --from-bundles, bundle image {change}: refused (sha256)"):
        with pytest.raises(InputError, match="changed since bundle"):
            read_bundle(tmp_path / "b")


# ------------------------------------------------------------------ 12, 14: files, streams, messages


def test_boxes_json_with_a_huge_integer_or_deep_nesting_ends_in_one_line(case, tmp_path, capsys):
    with record("CLI", "boxes JSON with a 5,000-digit integer: one line"):
        (tmp_path / "big.json").write_text('{"boxes": [{"label": 3, "slice": ' + "9" * 5000 + ', "xyxy": [1, 1, 5, 5]}]}')
        _refused(capsys, ["segment", str(case["image"]), "--boxes", str(tmp_path / "big.json"), "--out", str(tmp_path / "o")],
                 "big.json", "not a valid boxes JSON")
    with record("CLI", "boxes JSON nested 100,000 levels: one line"):
        (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
        _refused(capsys, ["segment", str(case["image"]), "--boxes", str(tmp_path / "deep.json"), "--out", str(tmp_path / "o")],
                 "deep.json", "nested too deeply")


def test_boxes_pointing_at_a_folder_says_so(case, tmp_path, capsys):
    with record("CLI", "--boxes pointing at a folder: 'is a folder'"):
        _refused(capsys, ["segment", str(case["image"]), "--boxes", str(tmp_path), "--out", str(tmp_path / "o")],
                 "is a folder, not a boxes JSON file")


def _pipe(data: bytes) -> str:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return f"/dev/fd/{r}"


def test_image_and_boxes_through_process_substitution_are_read(case, tmp_path, capsys):
    from MuscleSAMLib.engine.boxes import load_boxes_file
    from MuscleSAMLib.volumes import read_volume

    with record("CLI", "image and boxes given as <(...) streams: read"):
        vol = read_volume(_pipe(case["image"].read_bytes()))
        assert vol.canonical_array.shape == (3, 48, 64)
        boxes, _ = load_boxes_file(_pipe(case["boxes"].read_bytes()), vol)
        assert len(boxes) == 2


def test_grid_mismatch_message_prints_plain_numbers(case, tmp_path, capsys):
    img = sitk.ReadImage(str(case["image"]))
    other = sitk.GetImageFromArray(np.zeros((3, 48, 65), np.uint8))
    sitk.WriteImage(other, str(tmp_path / "wide.nii.gz"))
    with record("CLI", "grid mismatch message: plain numbers, no np.int64(...)"):
        err = _refused(capsys, ["export", str(case["image"]), "--corrected", str(tmp_path / "wide.nii.gz"),
                                "--out", str(tmp_path / "b")], "different grids", f"{img.GetSize()}")
        assert "np." not in err


def test_raw_itk_warnings_do_not_appear_above_the_one_line_error(case, tmp_path):
    b = _nifti_bytes(case["image"])
    struct.pack_into("<f", b, 76 + 12, 0.0)
    (tmp_path / "nospacing.nii").write_bytes(bytes(b))
    with record("CLI", "raw ITK warnings suppressed (only our one line on stderr)"):
        done = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "segment", str(tmp_path / "nospacing.nii"),
                               "--boxes", str(case["boxes"]), "--out", str(tmp_path / "o")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and "WARNING" not in done.stderr, done.stderr


def test_legs_not_side_by_side_in_patient_coordinates_are_not_all_called_right():
    """Thighs rotated 90 degrees (one in front of the other along the patient's A-P axis): no right-left gap,
    so no side is claimed (the old code reported every muscle on the 'right')."""
    from MuscleSAMLib.biomarkers import muscle_biomarkers

    image = np.zeros((1, 40, 20))
    image[0, 3:17, 2:18] = 100.0   # one thigh anterior
    image[0, 23:37, 2:18] = 100.0  # the other posterior
    labels = np.zeros(image.shape, np.uint8)
    labels[0, 4:16, 4:16] = 3
    labels[0, 24:36, 4:16] = 3
    with record("CLI", "thighs rotated 90 degrees: sides not claimed (only 'both'), not all 'right'"):
        rows = muscle_biomarkers(labels, (1.0, 1.0, 1.0), image=image)
        assert {b.side for b in rows} == {"both"}
        side_by_side = np.zeros((1, 20, 40))
        side_by_side[0, 2:18, 3:17] = side_by_side[0, 2:18, 23:37] = 100.0
        lab2 = np.zeros(side_by_side.shape, np.uint8)
        lab2[0, 4:16, 4:16] = lab2[0, 4:16, 24:36] = 3
        assert {b.side for b in muscle_biomarkers(lab2, (1.0, 1.0, 1.0), image=side_by_side)} == {"right", "left", "both"}
