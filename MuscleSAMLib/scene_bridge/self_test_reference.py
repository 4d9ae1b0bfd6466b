"""The desktop self-test's scenario and its frozen reference (MuscleSAM/Resources/Testing/demo_reference.json).

``MuscleSAMTest`` (MuscleSAM/MuscleSAMSelfTest.py) drives the real widget in desktop Slicer through this
scenario: the embedded sample, tight boxes from its labels for :data:`MUSCLES` on stored slice
:data:`SLICE`, Segment with the shipped default ensemble, heatmap, review table, next most uncertain.
The same scenario runs here on slicer-core, so the reference is regenerated without Slicer, into the
source tree, and checked by the normal test suite. From a clone (``source scripts/env.sh`` first)::

    python -m MuscleSAMLib.scene_bridge.self_test_reference --write   # regenerate after a model change
    python -m MuscleSAMLib.scene_bridge.self_test_reference           # compare only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..paths import REPO_ROOT
from . import geometry, prompts

MUSCLES = (2, 3, 8, 10)  # rectus femoris, vastus lateralis, biceps femoris long head, semimembranosus
SLICE = 7  # stored axial slice of Thigh_001
REFERENCE = REPO_ROOT / "MuscleSAM" / "Resources" / "Testing" / "demo_reference.json"
UNCERTAINTY_TOLERANCE = 1e-3  # nats: CPU thread scheduling may change the last digits


def scenario_rois(logic: Any, volume_node: Any, labels_node: Any) -> list[Any]:
    """The self-test's box ROIs: one per muscle component on :data:`SLICE`, tight around the sample's labels."""
    vol = geometry.volume_from_node(volume_node)
    boxes = logic.boxes_from_labelmap(volume_node, labels_node, values=MUSCLES, slices=[SLICE])
    return [prompts.roi_for_box(volume_node.GetScene(), vol, b, name=f"self-test box {b.label}") for b in boxes]


def stats(heatmap_node: Any, table_node: Any, target: Any, changed: Sequence[int]) -> dict:
    """What the reference freezes: mean uncertainty where it is > 0, the first review place, table rows, muscles."""
    from .mrml import slicer_module  # noqa: PLC0415

    heat = slicer_module().util.arrayFromVolume(heatmap_node)
    return {"mean_uncertainty": float(heat[heat > 0].mean()) if (heat > 0).any() else 0.0,
            "first_review": [int(target.slice), int(target.label)] if target is not None else None,
            "review_rows": int(table_node.GetNumberOfRows()), "changed_labels": sorted(int(v) for v in changed)}


def differences(found: dict, reference: dict) -> list[str]:
    """Each way ``found`` differs from ``reference`` (empty: they agree)."""
    out = []
    if not math.isclose(found["mean_uncertainty"], reference["mean_uncertainty"], abs_tol=UNCERTAINTY_TOLERANCE):
        out.append(f"mean uncertainty {found['mean_uncertainty']:.5f} != {reference['mean_uncertainty']:.5f}")
    out += [f"{k} {found[k]} != {reference[k]}" for k in ("first_review", "review_rows", "changed_labels")
            if found[k] != reference[k]]
    return out


def run_headless(ensemble: str | None = None, manifest: str | None = None) -> dict:
    """The scenario on a slicer-core scene with the shipped default ensemble on the CPU; returns :func:`stats`."""
    from ..sample_data import sample_case  # noqa: PLC0415
    from ..volumes import read_volume  # noqa: PLC0415
    from .headless import headless_scene  # noqa: PLC0415
    from .logic import MuscleSAMLogic  # noqa: PLC0415

    case = sample_case()
    h = headless_scene()
    logic = MuscleSAMLogic()
    try:
        volume = geometry.add_volume_node(h.scene, read_volume(case.water), "water")
        labels = geometry.add_volume_node(h.scene, read_volume(case.labels, allow_labels=True), "labels",
                                          "vtkMRMLLabelMapVolumeNode")
        logic.load_ensemble(ensemble, manifest, "cpu")
        outcome = logic.segment(volume, scenario_rois(logic, volume, labels))
        target = logic.next_uncertain(volume, jump=False)
        return stats(outcome.heatmap_node, outcome.table_node, target, outcome.changed_labels)
    finally:
        logic.shutdown()
        h.scene.Clear(1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE.relative_to(REPO_ROOT)} (source tree)")
    args = p.parse_args(argv)
    if args.write and not (REPO_ROOT / ".git").exists():
        print(f"{REPO_ROOT} is not a clone: regenerate the reference in the source tree, not an install", file=sys.stderr)
        return 2
    found = run_headless()
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {REFERENCE}")
        return 0
    problems = differences(found, json.loads(REFERENCE.read_text(encoding="utf-8")))
    print("\n".join(problems) or "matches the reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
