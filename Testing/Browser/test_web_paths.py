"""The path rule (paths.py) without a server: which paths typed in the page may be opened, and safe names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from MuscleSAMLib.errors import InputError
from MuscleSAMLib.web.paths import PathRule, is_download_name, safe_file_name


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """data/ (allowed, with an image, a link out, a link in and a DICOM-like folder), outside/ (not allowed)."""
    data, outside, sample = tmp_path / "data", tmp_path / "outside", tmp_path / "sample"
    for d in (data, outside, sample, data / "series"):
        d.mkdir()
    for f in (data / "water.nii.gz", outside / "secret.nii.gz", sample / "s.nii.gz", data / "series" / "1.dcm"):
        f.write_bytes(b"x")
    os.symlink(outside / "secret.nii.gz", data / "link_out.nii.gz")
    os.symlink(data / "water.nii.gz", outside / "link_in.nii.gz")
    return {"data": data, "outside": outside, "sample": sample, "image": data / "water.nii.gz"}


def _rule(t: dict[str, Path], data_dirs: tuple[Path, ...] = ()) -> PathRule:
    return PathRule.build(data_dirs, t["image"], t["sample"])


def test_inside_allowed_folders_is_opened_resolved(tree: dict[str, Path]) -> None:
    rule = _rule(tree)  # default: the folder of IMAGE, plus the sample's folder
    assert rule.check(str(tree["image"])) == tree["image"].resolve()
    assert rule.check("  water.nii.gz ") == tree["image"].resolve()  # relative: inside the first allowed folder
    assert rule.check(str(tree["sample"] / "s.nii.gz")) == (tree["sample"] / "s.nii.gz").resolve()
    assert rule.check(str(tree["data"] / "series")) == (tree["data"] / "series").resolve()  # a DICOM folder
    assert rule.check(str(tree["data"] / "missing.nii.gz")).name == "missing.nii.gz"  # the reader says 'not found'
    # a link from outside pointing into an allowed folder is judged by where it leads
    assert rule.check(str(tree["outside"] / "link_in.nii.gz")) == tree["image"].resolve()


@pytest.mark.parametrize("case, build, expected", [
    ("outside", lambda t: str(t["outside"] / "secret.nii.gz"), "is outside the folders this server may open"),
    ("system file", lambda t: "/etc/passwd", "is outside"),
    ("dot-dot escape", lambda t: str(t["data"] / ".." / "outside" / "secret.nii.gz"), "contains '..'"),
    ("relative dot-dot", lambda t: "../outside/secret.nii.gz", "contains '..'"),
    ("symlink out", lambda t: str(t["data"] / "link_out.nii.gz"), "a link to"),
    ("NUL", lambda t: str(t["image"]) + "\x00.png", "NUL"),
    ("newline", lambda t: str(t["image"]) + "\n/etc/passwd", "control character"),
    ("too long", lambda t: "/" + "a" * 5000, "characters long"),
    ("name too long", lambda t: str(t["data"] / ("a" * 300)), "cannot be used"),
    ("not text", lambda t: ["/etc/passwd"], "not text"),
])
def test_refused_with_the_path_and_what_to_do(tree: dict[str, Path], case: str, build, expected: str) -> None:
    with pytest.raises(InputError, match=expected) as info:
        _rule(tree).check(build(tree))
    text = str(info.value)
    if case not in ("not text", "too long", "name too long"):
        assert str(build(tree)).splitlines()[0].replace("\x00", "\\x00")[:60] in text, text  # names the path
    assert any(hint in text for hint in ("--data-dir", "type the", "copy the")), text  # says what to do


def test_data_dir_replaces_the_image_folder(tree: dict[str, Path]) -> None:
    rule = _rule(tree, (tree["outside"],))
    assert rule.check(str(tree["outside"] / "secret.nii.gz")).name == "secret.nii.gz"
    assert rule.check(str(tree["image"])) == tree["image"].resolve()  # the command-line image itself stays allowed
    with pytest.raises(InputError, match="is outside"):
        rule.check(str(tree["data"] / "series"))  # its folder does not
    assert rule.folders == (tree["outside"].resolve(), tree["sample"].resolve())


def test_folder_with_a_link_out_is_refused(tree: dict[str, Path]) -> None:
    os.symlink(tree["outside"] / "secret.nii.gz", tree["data"] / "series" / "2.dcm")
    with pytest.raises(InputError, match="2.dcm, a link to .*secret.nii.gz"):
        _rule(tree).check(str(tree["data"] / "series"))


def test_safe_names() -> None:
    assert safe_file_name("Thigh_001_water") == "Thigh_001_water"
    assert safe_file_name("../../etc/cron.d/x") == "_._etc_cron.d_x"  # no separator, no '..' survives
    assert "/" not in safe_file_name("a/b\x00c") and safe_file_name("...") == "image" and len(safe_file_name("a" * 500)) == 100
    assert is_download_name("Thigh_001_water-corrected-20240101-120000.zip")
    for bad in ("../x.zip", "a/b.zip", ".hidden.zip", "x.zip\x00", "x..zip", "x.txt", "x%2f.zip", ""):
        assert not is_download_name(bad), bad


def test_cli_refuses_a_data_dir_that_is_not_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from MuscleSAMLib.cli.main import main

    assert main(["web", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path / 'nope'}: no such folder" in err and len(err.strip().splitlines()) == 1, err
