"""Small data types passed between the engine's parts (prompts, per-box predictions, slice results).

Coordinates are in the *canonical* array of :class:`MuscleSAMLib.volumes.Volume` (axial slice index,
rows anterior->posterior, cols patient right->left). Boxes are half-open pixel ranges
``(col0, row0, col1, row1)``: a box covering columns 10..19 has col0=10, col1=20.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BoxPrompt:
    """One box prompt: muscle ``label`` on axial ``slice``, pixel box ``xyxy`` (half-open), and the
    corrective clicks given after it, in order: ``points`` ((x, y, 1 | 0), ...) pixel indices on the
    same slice (1 = muscle, 0 = not muscle; :mod:`.clicks`)."""

    label: int
    slice: int
    xyxy: tuple[int, int, int, int]
    source: str = ""  # where it came from, for error messages (e.g. "boxes.json box #3")
    points: tuple[tuple[int, int, int], ...] = ()

    @property
    def width(self) -> int:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height(self) -> int:
        return self.xyxy[3] - self.xyxy[1]


@dataclass(frozen=True)
class Window:
    """A rectangular region of a slice: rows ``r0:r1``, cols ``c0:c1`` (half-open)."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return (slice(self.r0, self.r1), slice(self.c0, self.c1))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)

    def intersect(self, other: "Window") -> "Window":
        """The part of this window inside ``other`` (may be empty: r1 <= r0 or c1 <= c0)."""
        return Window(max(self.r0, other.r0), min(self.r1, other.r1), max(self.c0, other.c0), min(self.c1, other.c1))


@dataclass
class BoxPrediction:
    """The ensemble's answer for one box, stored only inside ``window`` (probability 0 outside).

    ``member_probs`` is (M, h, w) float32: each member's sigmoid probability on the slice grid.
    ``iou_pred`` is (M,): each member's SAM IoU prediction (its own quality score for this mask).
    """

    box: BoxPrompt
    window: Window
    member_probs: np.ndarray
    iou_pred: np.ndarray

    @property
    def mean_prob(self) -> np.ndarray:
        """Ensemble-mean probability (members' probabilities averaged, never logits), (h, w)."""
        return self.member_probs.mean(axis=0)

    def full_slice(self, shape: tuple[int, int], members: bool = False) -> np.ndarray:
        """Paste into a zero slice of ``shape``: (rows, cols) mean, or (M, rows, cols) members."""
        if members:
            out = np.zeros((self.member_probs.shape[0], *shape), np.float32)
            out[(slice(None), *self.window.slices)] = self.member_probs
        else:
            out = np.zeros(shape, np.float32)
            out[self.window.slices] = self.mean_prob
        return out


@dataclass
class SlicePrediction:
    """All box predictions of one axial slice, plus boxes that failed (never silently dropped)."""

    slice: int
    shape: tuple[int, int]
    boxes: list[BoxPrediction] = field(default_factory=list)
    rejected: list[tuple[BoxPrompt, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
