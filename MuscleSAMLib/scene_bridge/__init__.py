"""The MRML scene bridge (DESIGN.md layer 2): MRML nodes in, engine calls, MRML nodes out.

Runs unchanged in desktop 3D Slicer, in trame-slicer and on the ``slicer-core`` wheel. Importing this
package needs neither Slicer nor torch: :mod:`.dependencies` is standard-library only (the desktop
module checks dependencies before anything heavy is imported), and :class:`MuscleSAMLogic` and the
other names below are imported on first use.

Modules: ``logic`` (MuscleSAMLogic), ``outcomes`` (result types), ``geometry`` (volume nodes <-> engine Volume), ``prompts`` (ROI /
RAS boxes), ``segments`` (muscle segmentation), ``overlays`` (heatmap, probability, agreement),
``review_table``, ``export`` (atomic bundle), ``jobs``, ``headless`` (slicer-core scene),
``dependencies``, ``user_data`` (the user's folder for learned ensembles).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MuscleSAMLogic": ".logic",
    "RunOutcome": ".outcomes",
    "EnsembleChoice": ".outcomes",
    "ReviewTarget": ".review_table",
    "Job": ".jobs",
    "Busy": ".jobs",
    "Cancelled": ".jobs",
    "headless_scene": ".headless",
    "start_learning": "..corrections.learning_runner",  # learning from corrections (a subprocess)
    "user_manifest": ".user_data",  # learned ensembles in the user's folder, never the install tree
    "learning_output": ".user_data",
    "propagation_starts": ".prompts",  # which boxes Propagate walks (one per leg), for both front ends
    "last_run_boxes": ".prompts",  # ... and what a run leaves for it
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
