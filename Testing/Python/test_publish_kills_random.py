"""Randomised sequences of real CLI runs (segment, export, train --from-bundles) into the same and
overlapping folders, each killed (SIGKILL or SIGTERM) at a random moment or left to finish.

After every step: no file the user owns changed, and every result folder is a complete published set
(its marker lists exactly the files there, each with its recorded sha256). At the end, one more run into each
place with leftovers beside it (staging or a set-aside result of a killed run) leaves none. Default: a few steps (tens of seconds); set
MUSCLESAM_KILL_STEPS (default 4) / MUSCLESAM_KILL_SEED for longer or reproducible runs. Recorded in the bad-input table.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bad_input_table import record
from musclesam_test_helpers import ROOT, write_random_decoder_ensemble
from MuscleSAMLib.result_folders import MARKER, read_marker

STEPS = int(os.environ.get("MUSCLESAM_KILL_STEPS", "4"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    t = tmp_path_factory.mktemp("kills")
    rng = np.random.default_rng(0)
    arr = rng.uniform(1, 20, (3, 40, 56)).astype(np.float32)
    arr[:, 6:34, 4:26] += 100
    arr[:, 6:34, 30:52] += 100
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(img, str(t / "water.nii.gz"))
    lab = np.zeros(arr.shape, np.uint8)
    lab[:, 8:30, 6:24] = 3
    lab[:, 8:30, 32:50] = 5
    labels = sitk.GetImageFromArray(lab)
    labels.CopyInformation(img)
    sitk.WriteImage(labels, str(t / "labels.nii.gz"))
    (t / "boxes.json").write_text(json.dumps({"boxes": [{"label": 3, "slice": 1, "xyxy": [6, 8, 23, 29]},
                                                        {"label": 5, "slice": 1, "xyxy": [32, 8, 49, 29]}]}))
    write_random_decoder_ensemble(t / "weights", members=2)
    return t


USER_FILES = ("data/water.nii.gz", "data/labels.nii.gz", "data/notes.txt", "todo.txt")


def _user_files(work: Path) -> dict[str, str]:
    """sha256 of every file the user owns, and the listing of their folder (nothing added there either)."""
    out = {n: hashlib.sha256((work / n).read_bytes()).hexdigest() for n in USER_FILES}
    out["data/ listing"] = ",".join(sorted(p.name for p in (work / "data").iterdir()))
    return out


def _check_published(folder: Path) -> None:
    """A result folder: exactly the files its marker lists, each byte-identical to what was recorded."""
    marker = read_marker(folder)
    assert marker is not None and marker.get("complete"), f"{folder}: no marker (a partial set?)"
    listed = {n for n, i in marker["files"].items() if not i.get("folder")}
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MARKER}
    assert present == listed, f"{folder}: files {sorted(present ^ listed)} differ from its marker"
    for name in listed:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == marker["files"][name]["sha256"], name


def _command(kind: str, dest: Path, work: Path, base: Path, manifest: Path) -> list[str]:
    if kind == "segment":
        return ["segment", str(base / "water.nii.gz"), "--boxes", str(base / "boxes.json"), "--out", str(dest),
                "--manifest", str(manifest), "--quiet"]
    if kind == "export":
        pred = work / "out"
        extra = ["--prediction", str(pred)] if read_marker(pred) and read_marker(pred).get("kind") == "segment" else []
        return ["export", str(base / "water.nii.gz"), "--corrected", str(base / "labels.nii.gz"), "--out", str(dest), *extra]
    bundles = [p for p in (work / "out", work / "out2", work / "bundle") if (read_marker(p) or {}).get("kind") == "bundle"]
    return ["train", "--from-bundles", str(bundles[0] if bundles else work / "bundle"), "--base-ensemble", "random-test",
            "--manifest", str(manifest), "--out", str(dest), "--steps", "1", "--quiet"]


def test_random_kills_never_change_user_files_and_never_publish_half_a_set(base, tmp_path):
    seed = int(os.environ.get("MUSCLESAM_KILL_SEED", str(random.randrange(10**6))))
    rnd = random.Random(seed)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copy(base / "water.nii.gz", work / "data" / "water.nii.gz")
    shutil.copy(base / "labels.nii.gz", work / "data" / "labels.nii.gz")
    (work / "data" / "notes.txt").write_text("the user's notes")
    (work / "todo.txt").write_text("the user's list")
    weights = Path(shutil.copytree(base / "weights", tmp_path / "weights"))  # learning adds members and an entry here
    manifest = weights / "manifest.json"
    user = _user_files(work)
    places = {"out": work / "out", "out2": work / "out2", "bundle": work / "bundle", "nested": work / "out" / "sub",
              "data": work / "data", "work": work}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = []
    with record("CLI", f"random kills (seed {seed}): user files unchanged, every published set complete"):
        for step in range(STEPS):
            kind = rnd.choice(["segment"] * 4 + ["export"] * 4 + ["train"] if step else ["segment"])
            where = rnd.choice(list(places)) if step else "out"
            dest = places[where]
            kill = None if step == 0 else rnd.choice([None, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
            delay = rnd.uniform(1.0, 8.0)
            proc = subprocess.Popen([sys.executable, "-m", "MuscleSAMLib.cli", *_command(kind, dest, work, base, manifest)],
                                    cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if kill is not None:
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(kill)
            _, err = proc.communicate(timeout=600)
            log.append(f"{kind} -> {where} {'killed ' + str(kill) + f' at {delay:.1f}s' if kill else ''}: rc {proc.returncode}")
            if proc.returncode == 2:
                assert len(err.strip().splitlines()) == 1, f"{log}\n{err}"
            elif proc.returncode not in (0, -9, -15, 130, 143):  # 130: train turns SIGTERM into an interrupt
                pytest.fail(f"seed {seed}: {log}\n{err}")
            if where in ("data", "work"):
                assert proc.returncode != 0, f"seed {seed}: published over the user's folder: {log}"
            assert _user_files(work) == user, f"seed {seed}: a user file changed: {log}"
            for p in (places["out"], places["out2"], places["bundle"], places["nested"]):
                if p.exists():
                    _check_published(p)
        for name in ("out", "out2", "bundle"):  # one more run into a place cleans what killed runs left beside it
            p = places[name]
            if not list(p.parent.glob(f".{p.name}.*")):
                continue
            kind = {"bundle": "export", "learning": "train"}.get((read_marker(p) or {}).get("kind"), "segment")
            done = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", *_command(kind, p, work, base, manifest)],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"seed {seed}: {log}\n{done.stderr}"
            leftovers = [q.name for q in p.parent.glob(f".{p.name}.*")]
            assert not leftovers, f"seed {seed}: leftovers {leftovers} after {log}"
            _check_published(p)
        assert _user_files(work) == user
