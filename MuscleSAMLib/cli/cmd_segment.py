"""``musclesam segment``: segment an image from box prompts with the ensemble."""

from __future__ import annotations

import argparse

from ..errors import MuscleSAMError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment an image from box prompts with the ensemble", description="Segment an image from box prompts with the ensemble. (Not available in this version yet.)")
    p.add_argument("image", metavar="IMAGE", help="image file (NIfTI, NRRD, MHA) or DICOM folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MuscleSAMError("`musclesam segment` is not available in this version yet; see README.md for what is")
