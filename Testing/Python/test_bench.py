"""``musclesam bench --json`` prints the agreed keys with positive times (speed targets live in the benchmark, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_json_has_the_agreed_keys():
    proc = subprocess.run([sys.executable, "-m", "MuscleSAMLib.cli", "bench", "--arch", "demo_xs", "--members", "2",
                           "--repeats", "1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("first_box_speedup", "cached_box_speedup", "encoder_floor_ratio", "members", "arch"):
        assert key in r
    assert r["members"] == 2 and r["arch"] == "demo_xs"
    assert all(r[k] > 0 for k in ("naive_first_box_s", "engine_first_box_s", "naive_cached_box_s", "engine_cached_box_s",
                                  "encoder_s", "encoder_floor_s"))
    assert r["encoder_gflop"] > 0.1  # the FLOP counter saw the encoder's matmuls
