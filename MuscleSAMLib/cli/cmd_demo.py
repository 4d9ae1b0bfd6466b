"""``musclesam demo``: run the main job on the shipped default (embedded sample thigh)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import write_json_atomic
from ..intensity import intensity_window, normalize_mri
from ..preview import write_slice_montage
from ..sample_data import sample_case
from ..volumes import read_dixon_pair, read_volume


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run MuscleSAM on the embedded sample thigh (default ensemble)",
                       description="Load the embedded real thigh Dixon sample, normalise it as the model sees it, "
                                   "and write the results to OUT (default ./musclesam_demo).")
    p.add_argument("--image", type=Path, help="use this MRI (water or single-contrast image) instead of the sample")
    p.add_argument("--fat", type=Path, help="Dixon fat image on the same grid as --image (optional)")
    p.add_argument("--out", type=Path, default=Path("musclesam_demo"), help="output folder (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.image is None:
        case = sample_case()
        name, fat_path, water_path = case.name, case.fat, case.water
    else:
        name, fat_path, water_path = args.image.name.split(".")[0], args.fat, args.image
    if fat_path is not None:
        _, water = read_dixon_pair(fat_path, water_path)
    else:
        water = read_volume(water_path)
    window = intensity_window(water.canonical_array)
    normalised = normalize_mri(water.canonical_array, window)
    out: Path = args.out
    preview = write_slice_montage(normalised, out / "preview.png", title=f"{name}, normalised 0-255 (model input)")
    summary = {
        "case": name,
        "image": str(water_path),
        "fat": str(fat_path) if fat_path else None,
        "orientation_stored": water.orientation,
        "shape_canonical_slices_rows_cols": list(normalised.shape),
        "spacing_mm_slices_rows_cols": [round(s, 4) for s in water.canonical_spacing],
        "intensity_window": {"low": window.low, "high": window.high},
        "preview": str(preview),
    }
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0
