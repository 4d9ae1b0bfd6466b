"""Output folders that refuse writes: read-only, or a disk that fills up mid-write (a real small file system).

CLI ``segment`` and ``export`` must end in one clear line naming the folder and what to do, leave no
partial or temp files, and keep what was there before (a previous bundle or previous results) intact.
Recorded in the bad-input table under "CLI".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bad_input_table import record
from musclesam_test_helpers import fill_disk, read_only_folder, small_disk, unmount, write_random_decoder_ensemble
from MuscleSAMLib.cli.main import main


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    """A small image, corrected labels, boxes and a random-weight ensemble (outside the test file systems)."""
    t = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.uniform(1, 100, (3, 48, 48)).astype(np.float32))
    sitk.WriteImage(image, str(t / "image.nii.gz"))
    for name, value in (("corrected.nii.gz", 3), ("corrected2.nii.gz", 5)):
        lab = np.zeros((3, 48, 48), np.uint8)
        lab[1, 5:30, 5:30] = value
        img = sitk.GetImageFromArray(lab)
        img.CopyInformation(image)
        sitk.WriteImage(img, str(t / name))
    (t / "boxes.json").write_text(json.dumps({"boxes": [{"label": 3, "slice": 1, "xyxy": [5, 5, 30, 30]}]}))
    return {"image": t / "image.nii.gz", "corrected": t / "corrected.nii.gz", "corrected2": t / "corrected2.nii.gz",
            "boxes": t / "boxes.json", "manifest": write_random_decoder_ensemble(t / "w", members=2)}


def _segment(case, out: Path) -> list[str]:
    return ["segment", str(case["image"]), "--boxes", str(case["boxes"]), "--out", str(out),
            "--manifest", str(case["manifest"]), "--quiet"]


def _export(case, out: Path, corrected: str = "corrected") -> list[str]:
    return ["export", str(case["image"]), "--corrected", str(case[corrected]), "--out", str(out)]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "filler.bin"}


def _one_clear_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize("command", ["segment", "export"])
def test_read_only_output_folder(command, case, tmp_path, capsys):
    with record("CLI", f"{command}: read-only output folder"):
        ro = tmp_path / "ro"
        how = read_only_folder(ro)
        try:
            argv = _segment(case, ro / "out") if command == "segment" else _export(case, ro / "bundle")
            assert main(argv) == 2
            _one_clear_line(capsys, str(ro), "choose another")
            assert list(ro.iterdir()) == []
        finally:
            if how == "mount":
                unmount(ro)
            else:
                os.chmod(ro, 0o755)


@pytest.mark.parametrize("command", ["segment", "export"])
def test_disk_fills_up_mid_write_keeps_the_previous_output(command, case, tmp_path, capsys):
    with record("CLI", f"{command}: disk fills up mid-write"):
        disk = tmp_path / "disk"
        if not small_disk(disk, 2048):
            pytest.skip("mounting a small tmpfs needs root: the full-disk case runs on CI and as root")
        try:
            out = disk / ("out" if command == "segment" else "bundle")
            first = _segment(case, out) if command == "segment" else _export(case, out)
            assert main(first) == 0, capsys.readouterr().err
            capsys.readouterr()
            before = _snapshot(disk)
            fill_disk(disk, leave_bytes=12 * 1024)  # the next write runs out of space part-way
            again = _segment(case, out) if command == "segment" else _export(case, out, "corrected2")
            assert main(again) == 2
            _one_clear_line(capsys, "no space left", "free some space or choose another")
            assert _snapshot(disk) == before, "the previous output changed or a partial/temp file was left"
        finally:
            unmount(disk)


@pytest.mark.parametrize("name", ["big.nii.gz", "big.nrrd", "big.seg.nrrd"])
def test_an_image_larger_than_the_free_space_is_refused_not_published_short(name, tmp_path):
    """ITK's NIfTI writer reports a short write only on stderr: the file is verified before it is published."""
    from MuscleSAMLib.errors import OutputWriteError
    from MuscleSAMLib.volumes import write_image_atomic

    disk = tmp_path / "disk"
    if not small_disk(disk, 1024):
        pytest.skip("mounting a small tmpfs needs root: the full-disk case runs on CI and as root")
    try:
        noise = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (8, 256, 256)).astype(np.float32))  # 2 MB
        with pytest.raises(OutputWriteError, match="no space left on the device"):
            write_image_atomic(noise, disk / name)
        assert list(disk.iterdir()) == []
    finally:
        unmount(disk)


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_leftovers_of_a_killed_write_are_cleaned_up_by_the_next_one(case, tmp_path):
    """A writer killed mid-write leaves a hidden staging folder beside the output; the next write into the
    same place removes it at once (its process is gone); another writer's, still running, is left alone."""
    out = tmp_path / "out"
    old = tmp_path / f".out.staging-{_dead_pid()}-abcd"
    old.mkdir(parents=True)
    (old / "labels.nii.gz").write_bytes(b"partial")
    fresh = tmp_path / f".out.staging-{os.getpid()}-efgh"  # a live process's: left alone
    fresh.mkdir()
    assert main(_segment(case, out)) == 0
    assert not old.exists() and fresh.exists()
    assert (out / "labels.nii.gz").is_file()


def test_a_result_set_aside_by_a_killed_swap_is_put_back(case, tmp_path, capsys):
    """Killed between 'previous result aside' and 'new result in place': the next run restores the previous one
    first, and then replaces it as a whole."""
    out = tmp_path / "out"
    assert main(_segment(case, out)) == 0
    aside = tmp_path / f".out.old-{_dead_pid()}-abcd"
    os.rename(out, aside)
    from MuscleSAMLib.result_folders import clean_leftovers

    clean_leftovers(out)
    assert out.is_dir() and not aside.exists() and (out / "labels.nii.gz").is_file()
