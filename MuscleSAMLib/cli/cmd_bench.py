"""``musclesam bench``: the engine vs the naive per-member SamPredictor way, side by side in one run.

The benchmark code lives in Testing/Benchmarks/bench_engine.py (a source checkout is needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json

from ..errors import InputError
from ..paths import REPO_ROOT

BENCH_FILE = REPO_ROOT / "Testing" / "Benchmarks" / "bench_engine.py"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine against the naive per-member SamPredictor way",
                       description="Time, in one run on the shipped ensemble's weights, image and boxes, interleaved: the "
                                   "first box on a new slice and the next box on a cached slice, engine vs one SamPredictor "
                                   "per member run one after another; the cached-box latency (mask + uncertainty) and the "
                                   "whole embedded sample. Targets: first box >= 5x, cached box >= 4x, cached box < 300 ms, "
                                   "sample < 60 s on 2 CPU threads.")
    p.add_argument("--ensemble", default=None, help="manifest entry (default: the default ensemble)")
    p.add_argument("--manifest", default=None, help="manifest (default: the shipped weights/manifest.json)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed pairs per case, median reported (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-volume", action="store_true", help="skip the whole-sample timing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not BENCH_FILE.is_file():
        raise InputError(f"{BENCH_FILE}: benchmark code not found; run bench from a source checkout of MuscleSAM")
    if args.repeats < 1 or args.threads < 1:
        raise InputError("--repeats and --threads must be at least 1")
    spec = importlib.util.spec_from_file_location("musclesam_bench_engine", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run_bench(args.ensemble, args.repeats, args.threads, manifest=args.manifest,
                              volume=not args.no_volume)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        module.print_table(result)
    return 0
