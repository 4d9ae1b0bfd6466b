"""``musclesam train``: fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture)."""

from __future__ import annotations

import argparse

from ..errors import MuscleSAMError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture)", description="Fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture). (Not available in this version yet.)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MuscleSAMError("`musclesam train` is not available in this version yet; see README.md for what is")
