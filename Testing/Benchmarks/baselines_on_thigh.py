"""Measure the non-learned box baselines on the real thigh Dixon data (METHODS.md "Measured on this
project's thigh data").

    python Testing/Benchmarks/baselines_on_thigh.py --data /work/shared/data/thigh_dixon

For each subject: the canonical water image and silver label map, one tight box per muscle per leg
per axial slice from the labels (``boxes_from_labels``, all slices), then fill-the-box and Slicer's
GrowCut in both seed modes (``per_box`` is METHODS' setting) -> mean DSC over the 11 muscles per
volume (``dice_per_label`` + ``mean_dice``). Prints a table; ``--per-muscle`` adds each muscle's DSC. Not a test (needs the data).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from MuscleSAMLib.baselines import MODES, boxfill_labels, growcut_labels  # noqa: E402
from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.metrics import dice_per_label, mean_dice  # noqa: E402
from MuscleSAMLib.volumes import read_volume  # noqa: E402

MUSCLES = tuple(range(1, 12))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/thigh_dixon"))
    ap.add_argument("--subjects", nargs="+", default=["Thigh_001", "Thigh_002"])
    ap.add_argument("--per-muscle", action="store_true", help="also print each muscle's DSC")
    args = ap.parse_args(argv)

    methods = ["boxfill"] + [f"growcut_{m}" for m in MODES]
    results: dict[str, dict[str, float]] = {m: {} for m in methods}
    per_muscle: dict[tuple[str, str], dict[int, float]] = {}
    for subject in args.subjects:
        water = read_volume(args.data / f"{subject}_water.nii.gz").canonical_array
        labels = read_volume(args.data / f"{subject}_labels.nii.gz", allow_labels=True).canonical_array
        labels = labels.astype("uint8")
        boxes = boxes_from_labels(labels)
        print(f"{subject}: {labels.shape[0]} slices, {len(boxes)} boxes", file=sys.stderr)
        for method in methods:
            t0 = time.perf_counter()
            if method == "boxfill":
                pred = boxfill_labels(boxes, labels.shape)
            else:
                pred = growcut_labels(water, boxes, labels.shape, mode=method.removeprefix("growcut_"))
            dt = time.perf_counter() - t0
            d = dice_per_label(pred, labels, MUSCLES)
            per_muscle[(method, subject)] = d
            results[method][subject] = mean_dice(d)
            print(f"  {method}: {results[method][subject]:.3f} ({dt:.1f} s)", file=sys.stderr)

    print("| method | " + " | ".join(args.subjects) + " |")
    print("| --- |" + " --- |" * len(args.subjects))
    for method in methods:
        print(f"| {method} | " + " | ".join(f"{results[method][s]:.3f}" for s in args.subjects) + " |")
    if args.per_muscle:
        print()
        print("| method | subject | " + " | ".join(str(k) for k in MUSCLES) + " |")
        print("| --- | --- |" + " --- |" * len(MUSCLES))
        for (method, subject), d in per_muscle.items():
            print(f"| {method} | {subject} | " + " | ".join(f"{d[k]:.2f}" for k in MUSCLES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
