"""``musclesam sample``: print where the embedded real thigh Dixon sample lives."""

from __future__ import annotations

import argparse
import json

from ..sample_data import sample_case


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="print the paths of the embedded sample thigh Dixon case",
                       description="Print the paths of the embedded real thigh Dixon MRI sample (water, fat, labels) and its licence file.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.add_argument("--which", choices=("water", "fat", "labels", "readme"), help="print only this path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    case = sample_case()
    paths = case.as_dict()
    if args.which:
        print(paths[args.which])
    elif args.json:
        print(json.dumps(paths, indent=2))
    else:
        for key, value in paths.items():
            print(f"{key:7s} {value}")
    return 0
