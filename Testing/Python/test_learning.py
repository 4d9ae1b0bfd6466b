"""Learning from corrections: bundle -> fine-tuned heads -> new manifest entry + before/after report; bad
input refused before training; the background runner reports progress and cancel kills the process tree."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_input_table import record
from musclesam_test_helpers import write_random_decoder_ensemble
from MuscleSAMLib.cli.main import main
from MuscleSAMLib.corrections import learning
from MuscleSAMLib.outputs.bundle import write_bundle
from MuscleSAMLib.corrections.learning import EVAL_METRICS, bump_version, bundle_sha256, new_name, read_bundle
from MuscleSAMLib.corrections.learning_runner import LearningHandle, start_learning
from MuscleSAMLib.errors import GeometryError, InputError
from MuscleSAMLib.models.architectures import ArchSpec
from MuscleSAMLib.models.ensemble import Ensemble
from MuscleSAMLib.models.manifest import load_manifest
from MuscleSAMLib.models.safe_load import load_state_dict, sha256_file
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.volumes import read_volume, volume_from_array, write_like

torch.set_num_threads(2)

TINY = {"like": "demo_xs", "name": "tiny", "encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [0], "img_size": 64, "patch_size": 8, "window_size": 0,
        "prompt_embed_dim": 32, "decoder_depth": 1, "decoder_mlp_dim": 64, "decoder_num_heads": 2,
        "iou_head_hidden_dim": 32, "mask_in_chans": 8}
BASE = "random-test"


def _case(d: Path, seed: int, spacing=(1.5, 1.5, 6.0)) -> tuple[Path, Path, np.ndarray]:
    ph = make_thigh_phantom(seed=seed, shape=(2, 64, 96), muscles=(1, 2, 3))
    ref = volume_from_array(ph.water.astype(np.float32), spacing=spacing)
    img, lab = d / f"p{seed}_water.nii.gz", d / f"p{seed}_labels.nii.gz"
    write_like(ph.water.astype(np.float32), ref, img)
    write_like(ph.labels, ref, lab)
    return img, lab, ph.labels


def _bundle(dest: Path, image: Path, labels: np.ndarray) -> Path:
    pred = labels.copy()
    pred[:, :, :40] = 0  # the "model" missed the right leg; the user painted it back
    return write_bundle(dest, read_volume(image), labels, prediction=pred,
                        provenance={"ensemble": BASE})


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A random tiny decoder ensemble (T = 2 baked), a phantom bundle, and one learning run (3 steps)."""
    d = tmp_path_factory.mktemp("learn")
    manifest = write_random_decoder_ensemble(d / "w", members=2, arch=ArchSpec.from_dict(TINY),
                                             prompt_geometry="box_crop", box_mask_prompt=True,
                                             training={"temperature": 2.0, "logit_offset": 0.5})
    img0, lab0_file, lab0 = _case(d, 0)
    img1, lab1, _ = _case(d, 1)
    bundle = _bundle(d / "bundle0", img0, lab0)
    before = manifest.read_bytes()
    argv = ["train", "--from-bundles", str(bundle), "--base-ensemble", BASE, "--manifest", str(manifest),
            "--out", str(d / "run"), "--steps", "3", "--held-out", str(img1), str(lab1), "--threads", "2",
            "--name", "learned-1", "--quiet"]
    rc = main(argv)
    return {"dir": d, "manifest": manifest, "before": before, "bundle": bundle, "img0": img0, "lab0": lab0,
            "lab0_file": lab0_file,
            "img1": img1, "lab1": lab1, "rc": rc}


def test_new_manifest_entry_checksums_and_untouched_default(learned):
    assert learned["rc"] == 0
    man = load_manifest(learned["manifest"])
    assert man.names == [BASE, "learned-1"]
    base, new = man.get(BASE), man.get("learned-1")
    assert base.default and not new.default and man.get(None).name == BASE
    assert new.version == bump_version(base.version) and new.kind == "decoder"
    assert new.base == base.base  # shared encoder file reused, unchanged
    for f in new.files:
        assert sha256_file(f.path) == f.sha256 and f.path.parent == learned["manifest"].parent
    rec = new.training["learning"]
    assert rec["base_ensemble"] == BASE and rec["root"] == BASE
    b = rec["bundles"][0]
    assert b["bundle"] == str(learned["bundle"].resolve())
    assert b["bundle_sha256"] == bundle_sha256(learned["bundle"])
    assert b["corrected_labels_sha256"] == sha256_file(learned["bundle"] / "corrected_labels.nii.gz")
    assert b["edited_voxels"] > 0
    assert new.training["temperature"] == 2.0 and new.training["config"]["mode"] == "D"
    assert new.training["logit_offset"] == 0.5  # the base's calibrated boundary: its masks would shrink without it
    old = json.loads(learned["before"])["ensembles"][0]
    assert json.loads(learned["manifest"].read_text())["ensembles"][0] == old  # base entry byte-for-byte the same


def test_report_has_before_after_for_corrected_and_held_out(learned):
    rep = json.loads((learned["dir"] / "run" / "learning_report.json").read_text())
    assert rep["new"]["name"] == "learned-1" and rep["base"]["name"] == BASE
    assert [c["role"] for c in rep["cases"]] == ["corrected", "held_out"]
    for c in rep["cases"]:
        for which in ("base", "new", "delta"):
            assert set(EVAL_METRICS) <= set(c[which])
        assert 0 <= c["base"]["dsc"] <= 1 and 0 <= c["new"]["dsc"] <= 1
        assert (learned["dir"] / "run" / "eval" / c["case"] / "new" / "report.json").is_file()
    assert isinstance(rep["regressions"], list) and "held-out" in rep["what_the_numbers_mean"]
    ba = load_manifest(learned["manifest"]).get("learned-1").training["before_after"]
    assert len(ba["cases"]) == 2
    assert not list((learned["dir"] / "run").glob(".learning-work*"))  # scratch removed


def test_new_ensemble_loads_and_differs_from_the_base(learned):
    man = load_manifest(learned["manifest"])
    base, new = man.get(BASE), man.get("learned-1")
    ens = Ensemble.from_spec(new)
    assert ens.members == 2 and ens.group_key == Ensemble.from_spec(base).group_key  # same encoder: cache shared
    for fb, fn in zip(base.members, new.members):
        a, b = load_state_dict(fb.path), load_state_dict(fn.path)
        assert set(b) <= set(a)
        assert any(not torch.equal(a[k], b[k]) for k in b)


def test_temperature_is_divided_out_and_baked_back(learned):
    plan = learning.plan_learning([learned["bundle"]], BASE, learned["manifest"], out=learned["dir"] / "plan",
                                  steps=1, name="plan-only")
    unbaked = learning._base_states(plan)[0]
    orig = load_state_dict(plan.base.members[0].path)
    k = next(k for k in orig if k.startswith("mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in k)
    torch.testing.assert_close(unbaked[k], orig[k] * 2.0)


def _expect_refused(argv, capsys, monkeypatch, manifest: Path, needle: str) -> None:
    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(learning, "finetune_heads", boom)
    before = manifest.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert manifest.read_bytes() == before


DAMAGE_NAMES = {"missing": "bundle missing a file", "edit_values": "edit map with false edits",
                "edit_bytes": "edit map not an image", "labels_bytes": "truncated corrected labels",
                "provenance": "corrupt provenance.json", "grid": "bundle from another grid", "moved": "image moved away"}


@pytest.mark.parametrize("damage, needle", [
    ("missing", "incomplete bundle, missing prompts.json"),
    ("edit_values", "corrupted edit map"),
    ("edit_bytes", "edit_map.nii.gz"),
    ("labels_bytes", "corrected_labels.nii.gz"),
    ("provenance", "corrupted bundle file"),
    ("grid", "different grids"),
    ("moved", "not found (moved?); pass the image with --image"),
])
def test_bad_bundles_are_refused_before_training(learned, tmp_path, capsys, monkeypatch, damage, needle):
    b = Path(shutil.copytree(learned["bundle"], tmp_path / "b"))
    if damage == "missing":
        (b / "prompts.json").unlink()
    elif damage == "edit_values":
        ref = read_volume(b / "edit_map.nii.gz", allow_labels=True)
        edits = np.rint(ref.canonical_array).astype(np.uint8)
        edits[0, 0, 0] = 1  # claims an edit where prediction and correction agree
        write_like(edits, ref, b / "edit_map.nii.gz")
    elif damage == "edit_bytes":
        (b / "edit_map.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    elif damage == "labels_bytes":
        data = (b / "corrected_labels.nii.gz").read_bytes()
        (b / "corrected_labels.nii.gz").write_bytes(data[: len(data) // 2])
    elif damage == "provenance":
        (b / "provenance.json").write_text("{not json")
    elif damage == "grid":  # a bundle written on another grid, claiming this image
        shutil.rmtree(b)
        img, _, lab = _case(tmp_path, 2, spacing=(1.0, 1.0, 5.0))
        write_bundle(b, read_volume(img), lab, provenance={"image": str(learned["img0"])})
    elif damage == "moved":
        img = tmp_path / "img.nii.gz"
        shutil.copy(learned["img0"], img)
        write_bundle(b, read_volume(img), learned["lab0"])
        img.unlink()
    argv = ["train", "--from-bundles", str(b), "--base-ensemble", BASE, "--manifest", str(learned["manifest"]),
            "--out", str(tmp_path / "run"), "--steps", "2", "--quiet"]
    with record("CLI", f"train --from-bundles: {DAMAGE_NAMES[damage]}"):
        _expect_refused(argv, capsys, monkeypatch, learned["manifest"], needle)
        assert not (tmp_path / "run").exists(), "partial training output left behind"


def test_unknown_base_and_flag_mixups_are_refused(learned, tmp_path, capsys, monkeypatch):
    m = learned["manifest"]
    common = ["--manifest", str(m), "--out", str(tmp_path / "r"), "--quiet"]
    _expect_refused(["train", "--from-bundles", str(learned["bundle"]), "--base-ensemble", "nope", *common],
                    capsys, monkeypatch, m, "has no ensemble 'nope'")
    _expect_refused(["train", "--from-bundles", str(learned["bundle"]), *common], capsys, monkeypatch, m,
                    "needs both --from-bundles")
    _expect_refused(["train", "--from-bundles", str(learned["bundle"]), "--base-ensemble", BASE, "--image", "a", "b",
                     *common], capsys, monkeypatch, m, "one image per bundle")
    _expect_refused(["train", "--from-bundles", str(learned["bundle"]), "--base-ensemble", BASE, "--held-out",
                     str(learned["img0"]), str(learned["lab0_file"]), *common], capsys, monkeypatch, m, "would not be held out")
    _expect_refused(["train", "--out", str(tmp_path / "r")], capsys, monkeypatch, m, "give --config")
    _expect_refused(["train", "--config", "x.json", "--held-out", "a", "b"], capsys, monkeypatch, m,
                    "--held-out only applies with --from-bundles")


def test_image_override_when_the_image_moved(learned, tmp_path):
    img = tmp_path / "moved.nii.gz"
    shutil.copy(learned["img0"], img)
    b = write_bundle(tmp_path / "b", read_volume(img), learned["lab0"])
    img.rename(tmp_path / "moved_again.nii.gz")
    with pytest.raises(InputError, match="moved"):
        read_bundle(b)
    case = read_bundle(b, tmp_path / "moved_again.nii.gz")
    assert case.image == (tmp_path / "moved_again.nii.gz").resolve() and case.edited_voxels is None
    other = _case(tmp_path, 3, spacing=(1.0, 1.0, 5.0))[0]
    with pytest.raises(GeometryError):
        read_bundle(b, other)


def test_names_and_versions():
    import datetime as dt

    now = dt.datetime(2026, 11, 25, 8, 5, tzinfo=dt.timezone.utc)
    assert new_name("thigh_demo", [], now) == "thigh_demo-corrected-20261125-0805"
    assert new_name("thigh_demo", ["thigh_demo-corrected-20261125-0805"], now) == "thigh_demo-corrected-20261125-0805-2"
    assert bump_version("0.1.0") == "0.1.1" and bump_version("2") == "2.0.1" and bump_version("v1") == "v1.1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_runner_parses_progress_and_cancel_kills_the_tree(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("@@progress " + '{"fraction": 0.25, "stage": "train", "message": "child %d"}' % child.pid, flush=True)
        print("plain log line", flush=True)
        time.sleep(120)
    """))
    seen = []
    h = LearningHandle([sys.executable, str(script)], on_progress=seen.append)
    t0 = time.time()
    while not seen and time.time() - t0 < 30:
        time.sleep(0.05)
    assert seen and seen[0].fraction == 0.25 and seen[0].stage == "train"
    child = int(seen[0].message.split()[1])
    assert _alive(h.pid) and _alive(child)
    h.cancel(grace=1.0)
    assert not h.running and h.returncode not in (None, 0) and h.error == "cancelled"
    t0 = time.time()
    while _alive(child) and time.time() - t0 < 5:
        time.sleep(0.05)
    assert not _alive(h.pid) and not _alive(child)
    assert "plain log line" in h.log


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_runner_cancel_of_a_real_learning_run_leaves_the_manifest(learned, tmp_path):
    m = learned["manifest"]
    before = m.read_bytes()
    files_before = sorted(p.name for p in m.parent.iterdir())
    stages, done = [], []
    h = start_learning([learned["bundle"]], BASE, manifest=m, out=tmp_path / "run", steps=1_000_000, threads=1,
                       name="cancelled-1", on_progress=lambda p: stages.append(p.stage), on_done=done.append)
    t0 = time.time()
    while "train" not in stages and h.running and time.time() - t0 < 90:
        time.sleep(0.1)
    assert "train" in stages, (h.error, list(h.stderr_tail))
    h.cancel(grace=10.0)
    assert done == [h] and h.returncode != 0 and h.cancelled and not _alive(h.pid)
    assert m.read_bytes() == before and sorted(p.name for p in m.parent.iterdir()) == files_before
    assert not list((tmp_path / "run").glob(".learning-work*"))  # SIGTERM unwound and cleaned up


def test_runner_reports_a_refused_input(learned, tmp_path):
    h = start_learning([tmp_path / "no_such_bundle"], BASE, manifest=learned["manifest"], out=tmp_path / "run")
    assert h.wait(120) == 2 and h.result is None
    assert "not a corrections bundle folder" in h.error
