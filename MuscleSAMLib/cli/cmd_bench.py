"""``musclesam bench``: benchmark the engine against the naive per-member SamPredictor way."""

from __future__ import annotations

import argparse

from ..errors import MuscleSAMError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine against the naive per-member SamPredictor way", description="Benchmark the engine against the naive per-member SamPredictor way. (Not available in this version yet.)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MuscleSAMError("`musclesam bench` is not available in this version yet; see README.md for what is")
