"""The page's state: defaults, and plain values built from the muscle table and bridge nodes.

Every key starts with ``msam_`` so it never collides with trame-slicer's own state.
"""

from __future__ import annotations

import math
from typing import Any

from ..sample_data import muscle_names

LEGEND_STOPS = 9


def hex_colour(rgb: Any) -> str:
    """'#rrggbb' from 0-255 ints."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def muscle_items() -> list[dict]:
    """The muscle picker's items: value, title ('VL vastus lateralis'), colour."""
    return [{"value": label, "title": f"{info['abbrev']}  {info['name']}", "abbrev": info["abbrev"],
             "name": info["name"], "color": hex_colour(info.get("color", (128, 128, 128)))}
            for label, info in sorted(muscle_names().items())]


def defaults() -> dict[str, Any]:
    """Initial values of every page key."""
    muscles = muscle_items()
    first = next(m for m in muscles if m["abbrev"] == "VL")
    return {
        "trame__title": "MuscleSAM",
        "msam_ready": False,  # a volume is shown and the ensemble is loaded
        "msam_phase": "starting",  # starting | loading | ready | error
        "msam_image": "",
        "msam_ensemble": "",
        "msam_device": "",
        "msam_on_cpu": False,
        "msam_message": {"type": "info", "text": "Starting..."},
        "msam_busy": False,
        "msam_busy_text": "",
        "msam_muscles": muscles,
        "msam_label": first["value"],
        "msam_label_color": first["color"],
        "msam_tool": "box",
        "msam_brush": 5.0,
        "msam_boxes": [],
        "msam_has_result": False,
        "msam_heat_visible": True,
        "msam_heat_kind": "total",
        "msam_heat_opacity": 0.5,
        "msam_heat_threshold": 0.05,
        "msam_legend": {"gradient": "", "max": round(math.log(2.0), 2), "title": "total uncertainty (nats)"},
        "msam_queue": [],
        "msam_remaining": 0,
        "msam_locked": False,
        "msam_export": None,
        "msam_export_folder": "",
        "msam_clients": 0,
        "msam_view_titles": {"Red": "Axial", "Green": "Coronal", "Yellow": "Sagittal"},  # + slice number
        "msam_cursor": "",  # what lies under the mouse: voxel, intensity, muscle, uncertainty
        "msam_confirm": None,  # {"text", "path"}: discard unsaved work and open another image?
        "msam_segments": [],  # the segment list: label, abbrev, name, colour, voxels, visible, locked
        "msam_seg_opacity": 0.5,
        "msam_window": "auto",
        "msam_can_undo_run": False,
        "msam_clicks": 0,  # clicks in effect for the chosen muscle on the axial view's slice (Undo click)
        "msam_suggest": False,  # show the suggested next click (a yellow star)
        "msam_suggested": False,  # a suggestion is shown now
    }


def legend(color_node: Any, window_max: float, kind: str) -> dict:
    """CSS gradient of the heatmap's colour table over [0, window_max] (what the views show)."""
    lut = color_node.GetLookupTable()
    n = max(2, int(lut.GetNumberOfTableValues()))
    stops = []
    for s in range(LEGEND_STOPS):
        t = s / (LEGEND_STOPS - 1)
        rgba = lut.GetTableValue(min(n - 1, int(round(t * (n - 1)))))
        stops.append(f"{hex_colour([255 * c for c in rgba])} {100 * t:.0f}%")
    return {"gradient": f"linear-gradient(to right, {', '.join(stops)})", "max": round(float(window_max), 2),
            "title": f"{kind} uncertainty (nats)"}


def table_rows(table_node: Any, limit: int = 50) -> list[dict]:
    """Rows of the bridge's review table node as dicts keyed by its column names."""
    if table_node is None:
        return []
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(min(limit, table_node.GetNumberOfRows())):
        rows.append({name: table_node.GetCellText(r, c) for c, name in enumerate(names)})
    return rows


def segment_rows(summary: list[dict]) -> list[dict]:
    """The segment list: muscles with voxels or locked, from the bridge's segment summary."""
    names = muscle_names()
    return [{"label": row["label"], "abbrev": names[row["label"]]["abbrev"], "name": names[row["label"]]["name"],
             "color": hex_colour(names[row["label"]].get("color", (128, 128, 128))), "voxels": row["voxels"],
             "visible": row["visible"], "locked": row["status"] == "completed", "status": row["status"]}
            for row in summary if row["voxels"] or row["status"] == "completed"]
