"""The desktop self-test's frozen reference is what the scenario gives today (run on slicer-core).

MuscleSAMTest compares desktop Slicer's run against the same file; regenerate it with
``python -m MuscleSAMLib.scene_bridge.self_test_reference --write`` after a change of the default ensemble.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from MuscleSAMLib.scene_bridge import self_test_reference as R  # noqa: E402


def test_reference_file_is_committed_and_the_scenario_reproduces_it():
    reference = json.loads(R.REFERENCE.read_text(encoding="utf-8"))
    assert reference["changed_labels"] == sorted(R.MUSCLES)
    assert R.differences(R.run_headless(), reference) == []


def test_differences_name_what_moved():
    ref = {"mean_uncertainty": 0.26, "first_review": [7, 8], "review_rows": 4, "changed_labels": [2, 3]}
    moved = dict(ref, mean_uncertainty=0.3, first_review=[6, 8])
    assert [d.split()[0] for d in R.differences(moved, ref)] == ["mean", "first_review"]
    assert R.differences(dict(ref, mean_uncertainty=0.2605), ref) == []
