"""``musclesam bench``: the engine vs the naive per-member SamPredictor way, side by side in one run.

The benchmark code lives in Testing/Benchmarks/bench_engine.py (a source checkout is needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json

from ..errors import InputError
from ..sample_data import REPO_ROOT

BENCH_FILE = REPO_ROOT / "Testing" / "Benchmarks" / "bench_engine.py"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine against the naive per-member SamPredictor way",
                       description="Time, in one run on the same weights, image and boxes: the first box on a new slice and "
                                   "the next box on a cached slice, engine vs one SamPredictor per member; and the encoder "
                                   "against its FLOP floor. Targets: first box >= 5x, cached box >= 4x, encoder <= 1.5x floor.")
    p.add_argument("--arch", default="demo_s", help="architecture (default: demo_s, the demo ensemble's; vit_b for full size)")
    p.add_argument("--members", type=int, default=5, help="ensemble members (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per case, median reported (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not BENCH_FILE.is_file():
        raise InputError(f"{BENCH_FILE}: benchmark code not found; run bench from a source checkout of MuscleSAM")
    spec = importlib.util.spec_from_file_location("musclesam_bench_engine", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if args.members < 1 or args.repeats < 1:
        raise InputError("--members and --repeats must be at least 1")
    result = module.run_bench(args.arch, args.members, args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        module.print_table(result)
    return 0
