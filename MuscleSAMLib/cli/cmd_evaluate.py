"""``musclesam evaluate``: evaluate the ensemble against a label map with boxes derived from it."""

from __future__ import annotations

import argparse

from ..errors import MuscleSAMError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate the ensemble against a label map with boxes derived from it", description="Evaluate the ensemble against a label map with boxes derived from it. (Not available in this version yet.)")
    p.add_argument("image", metavar="IMAGE", help="image file or DICOM folder")
    p.add_argument("labels", metavar="LABELS", help="label map on the same grid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MuscleSAMError("`musclesam evaluate` is not available in this version yet; see README.md for what is")
