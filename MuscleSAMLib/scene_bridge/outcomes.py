"""Small result and settings types of the scene bridge (no MRML imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.types import BoxPrompt
from .overlays import UNCERTAINTY_MAX_NATS


@dataclass(frozen=True)
class EnsembleChoice:
    """One manifest entry for the ensemble selector."""

    name: str
    default: bool
    installed: bool
    licence: str
    description: str
    missing: tuple[str, ...] = ()


@dataclass
class DisplaySettings:
    """How the heatmap is shown (kept across runs)."""

    kind: str = "total"
    opacity: float = 0.5
    threshold: float = 0.05
    window_max: float = UNCERTAINTY_MAX_NATS
    agreement_outlines: bool = False
    legend_in_views: bool = True  # Slicer's colour legend drawn in the slice views (a web page shows its own)


@dataclass
class RunOutcome:
    """What a Segment / Propagate run changed in the scene."""

    segmentation_node: Any
    heatmap_node: Any
    probability_node: Any
    table_node: Any
    boxes: list[BoxPrompt]
    changed_labels: list[int]
    flagged_labels: list[int]
    rejected: list[tuple[str, str]]
    slices: list[int]
    seconds: float
    stops: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each, for the panel (e.g. a Dixon pair that looks swapped)

    @property
    def stop_notes(self) -> list[str]:
        """Where and why propagation stopped, one line per direction for every front end: 'down: ...'
        (towards the feet) first, then 'up: ...' (towards the head)."""
        return [f"{'down' if d < 0 else 'up'}: {why}" for d, why in sorted(self.stops.items())]


#: What a click says when the ensemble's training record shows no click training (MODEL_CARD: such a
#: decoder fixes the clicked pixel in only about a third to a half of clicks and often worsens the rest).
NOT_CLICK_TRAINED = ("This ensemble was trained on boxes only and often does not follow clicks (see the model "
                     "card); if the mask gets worse near the click, Undo click and paint the fix.")

#: What a click says when the ensemble left the clicked spot on the other side: with the engine's local
#: update (engine/clicks.py, merge_click_answer) such a click changes nothing.
NOT_FOLLOWED = ("The ensemble did not move the clicked spot to the side you clicked; click deeper inside the "
                "wrong region, or Undo click and paint the fix.")


@dataclass
class ClickOutcome:
    """What adding (or taking back) one click changed: the run it made, and the click itself."""

    run: RunOutcome
    label: int
    slice: int  # the node's own axial index K
    ras: tuple[float, float, float]  # where the click is (world RAS)
    positive: bool  # True: "muscle", False: "not muscle"
    added: bool  # False: the click was taken back (Undo click)
    clicks: int  # clicks on that box now
    changed_voxels: int  # segmentation voxels the run changed
    kept_edits: int  # voxels the user painted or erased that the new answer left as the user made them
    caveat: str = ""  # a warning the front ends show with the click (e.g. the ensemble was not trained for clicks)
    followed: bool | None = None  # did the model change the clicked spot (None: an undo)
