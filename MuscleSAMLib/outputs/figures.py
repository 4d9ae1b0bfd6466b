"""Figures for PNG files: built on matplotlib's object API and saved atomically.

No ``matplotlib.use`` and no pyplot: a :class:`~matplotlib.figure.Figure` made here renders with Agg
when it is saved, whatever backend the process uses, so drawing a report inside desktop Slicer never
switches the host's plotting backend, and there is no pyplot figure registry to leak into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..atomic import atomic_path


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **subplots: Any) -> tuple[Figure, Any]:
    """A figure (not registered with pyplot) and its axes, as ``plt.subplots`` would give them."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temp file + rename); returns the path."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return dest
