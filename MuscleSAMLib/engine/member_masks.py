"""Each ensemble member's own mask of every muscle: THE member-mask assembler (CLI runs and the bridge's session).

A member's mask of a muscle is ``p_m >= threshold`` (the run's, 0.5 by default) inside that muscle's window on each slice (the
window of its box with the highest mean, see ``assembly``); member masks are not contested between
muscles (each member's view of that muscle alone). They give the members' [min, max] intervals of
volumes and fat fractions. Kept per (slice, label) window and assembled into whole volumes only on
demand, label by label (a volume per muscle per member would be large).
"""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Tuple

import numpy as np

from .assembly import LabelProbabilities

Window = Tuple[slice, slice]
MemberWindows = Dict[Tuple[int, int], Tuple[Window, np.ndarray]]  # (slice, label) -> (window, (M, h, w) bool)


def member_window(per: LabelProbabilities, threshold: float = 0.5) -> tuple[Window, np.ndarray]:
    """(window slices, (M, h, w) bool) of one muscle on one slice: each member's own mask (p_m >= threshold) there."""
    return per.window.slices, per.members >= threshold


class MemberMasks(Mapping[int, np.ndarray]):
    """Read-only mapping label -> (M, slices, rows, cols) bool, assembled from the per-slice windows."""

    def __init__(self, windows: MemberWindows, shape: tuple[int, ...]) -> None:
        self._windows, self._shape = windows, tuple(shape)
        self._labels = sorted({label for _, label in windows})

    def __getitem__(self, label: int) -> np.ndarray:
        items = [(k, w, m) for (k, lab), (w, m) in self._windows.items() if lab == label]
        if not items:
            raise KeyError(label)
        out = np.zeros((items[0][2].shape[0], *self._shape), bool)
        for k, window, members in items:
            out[(slice(None), k, *window)] = members
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)
