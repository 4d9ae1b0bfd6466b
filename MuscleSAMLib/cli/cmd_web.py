"""``musclesam web``: serve the MuscleSAM web app (trame-slicer) on localhost."""

from __future__ import annotations

import argparse

from ..errors import MuscleSAMError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="serve the MuscleSAM web app (trame-slicer) on localhost", description="Serve the MuscleSAM web app (trame-slicer) on localhost. (Not available in this version yet.)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MuscleSAMError("`musclesam web` is not available in this version yet; see README.md for what is")
