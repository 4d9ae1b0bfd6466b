"""CLI: every sub-command has help, user errors exit 2 with one line naming the file, demo runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MuscleSAMLib.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["demo", "segment", "evaluate", "export", "train", "bench", "web", "sample"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"musclesam {command}" in capsys.readouterr().out


def test_parser_lists_all_commands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) <= set(choices)


def test_sample_prints_existing_paths(capsys):
    assert main(["sample", "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    for key in ("water", "fat", "labels", "readme"):
        assert Path(paths[key]).is_file()
    assert "Apache" in Path(paths["readme"]).read_text()


def test_demo_segments_the_sample_and_reports_agreement(tmp_path):
    from musclesam_test_helpers import write_random_decoder_ensemble

    manifest = write_random_decoder_ensemble(tmp_path / "w", members=2)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "demo", "--out", str(out), "--manifest", str(manifest),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in ("labels.nii.gz", "labels.seg.nrrd", "uncertainty_total.nii.gz", "report.json", "overlay.png", "agreement.json"):
        assert (out / name).is_file(), name
    agreement = json.loads((out / "agreement.json").read_text())
    assert agreement["baseline_boxfill"]["mean"]["dsc"] == pytest.approx(0.767, abs=0.002)  # METHODS.md
    assert "silver" in agreement["what"]
    png = out / "overlay.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_corrupt_image_gives_one_line_naming_it_and_exit_code_2(tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"garbage" * 100)
    (tmp_path / "b.json").write_text('{"boxes": [{"label": 3, "slice": 0, "xyxy": [1, 1, 5, 5]}]}')
    proc = _cli("segment", str(bad), "--boxes", str(tmp_path / "b.json"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_dixon_pair_on_different_grids_exit_code_2(tmp_path):
    arr = np.random.default_rng(0).integers(1, 100, (4, 16, 16)).astype(np.int16)
    water, fat = tmp_path / "water.nii.gz", tmp_path / "fat.nii.gz"
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(water))
    img.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(img, str(fat))
    (tmp_path / "b.json").write_text('{"boxes": [{"label": 3, "slice": 0, "xyxy": [1, 1, 5, 5]}]}')
    proc = _cli("segment", str(water), "--fat", str(fat), "--boxes", str(tmp_path / "b.json"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "different grids (origin" in proc.stderr and str(fat) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_segmenting_leaves_autograd_on_for_later_training(tmp_path):
    """run_case must not switch gradients off process-wide (the web app learns in the same process)."""
    import torch

    from MuscleSAMLib.engine.types import BoxPrompt
    from MuscleSAMLib.models.loading import load_ensemble
    from MuscleSAMLib.pipelines.segment import run_case
    from MuscleSAMLib.volumes import volume_from_array
    from musclesam_test_helpers import write_random_decoder_ensemble

    loaded = load_ensemble(None, write_random_decoder_ensemble(tmp_path / "w"), "cpu")
    vol = volume_from_array(np.random.default_rng(0).uniform(1, 100, (3, 40, 40)).astype(np.float32))
    run_case(vol, [BoxPrompt(3, 1, (5, 5, 20, 20))], loaded, tmp_path / "out", show_progress=False)
    assert torch.is_grad_enabled()
