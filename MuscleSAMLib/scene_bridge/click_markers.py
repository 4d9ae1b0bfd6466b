"""The clicks and the suggested next click as markups points in the slice views.

Two locked fiducial nodes per volume hold every click in effect (the clicks of each muscle's latest
prediction on each slice): green "+" crosses for "muscle", red "-" dashes for "not muscle"; a third holds
the suggested next click (a yellow star). Slicer draws a point only on the slice it lies on, so every
slice shows its own clicks. The nodes belong to the volume (removed with the case).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..engine.session import Session
from .geometry import canonical_to_ras
from .mrml import find_owned_node, owned_node, slicer_module

POSITIVE, NEGATIVE, SUGGESTED = "clicks +", "clicks -", "suggested click"
STYLE = {POSITIVE: ("ThickCross2D", (0.1, 0.9, 0.2)), NEGATIVE: ("Dash2D", (1.0, 0.15, 0.15)),
         SUGGESTED: ("StarBurst2D", (1.0, 0.9, 0.1))}
GLYPH_SCALE = 4.0  # % of the view: easy to see on a thigh, small beside a muscle


def clicks_in_effect(session: Session) -> list[tuple[int, int, tuple[int, int, int]]]:
    """(canonical slice, label, (x, y, sign)) of every click in the latest prediction of each muscle and slice."""
    out = []
    for (k, label), lp in sorted(session.label_probs.items()):
        for pred in lp.boxes:
            out.extend((k, label, p) for p in pred.box.points)
    return out


def _marker_node(volume_node: Any, role: str) -> Any:
    node = owned_node(volume_node.GetScene(), "vtkMRMLMarkupsFiducialNode", role, volume_node, f"MuscleSAM {role}")
    node.SetLocked(True)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        glyph, colour = STYLE[role]
        display.SetGlyphType(getattr(slicer_module().vtkMRMLMarkupsDisplayNode, glyph))
        display.SetColor(*colour)
        display.SetSelectedColor(*colour)
        display.SetGlyphScale(GLYPH_SCALE)
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
    return node


def _set_points(node: Any, points: Sequence[tuple[Sequence[float], str]]) -> None:
    """Replace the node's control points (one Modified event)."""
    was = node.StartModify()
    node.RemoveAllControlPoints()
    for ras, name in points:
        node.AddControlPoint(*[float(v) for v in ras], name)
    node.EndModify(was)


def write_click_markers(volume_node: Any, session: Session) -> None:
    """Show every click in effect on ``volume_node``'s slices (nodes made on the first click only)."""
    clicks = clicks_in_effect(session)
    for role, sign in ((POSITIVE, 1), (NEGATIVE, 0)):
        mine = [(canonical_to_ras(session.volume, x, y, k), f"{label}{'+' if sign else '-'}")
                for k, label, (x, y, s) in clicks if s == sign]
        node = find_owned_node(volume_node.GetScene(), "vtkMRMLMarkupsFiducialNode", role, volume_node.GetID())
        if node is None and not mine:
            continue
        _set_points(node or _marker_node(volume_node, role), mine)


def write_suggestion(volume_node: Any, ras: Sequence[float] | None) -> None:
    """Put the suggested-click marker at ``ras`` (None: take it away)."""
    node = find_owned_node(volume_node.GetScene(), "vtkMRMLMarkupsFiducialNode", SUGGESTED, volume_node.GetID())
    if node is None and ras is None:
        return
    _set_points(node or _marker_node(volume_node, SUGGESTED), [] if ras is None else [(ras, "next click?")])


def marker_points(volume_node: Any, role: str) -> list[tuple[float, float, float]]:
    """World RAS of the points of marker ``role`` (POSITIVE, NEGATIVE or SUGGESTED) on ``volume_node`` (tests, pages)."""
    node = find_owned_node(volume_node.GetScene(), "vtkMRMLMarkupsFiducialNode", role, volume_node.GetID())
    if node is None:
        return []
    out = []
    for i in range(node.GetNumberOfControlPoints()):
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(i, p)
        out.append((p[0], p[1], p[2]))
    return out
