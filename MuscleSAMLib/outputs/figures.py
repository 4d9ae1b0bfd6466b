"""Saving matplotlib figures as PNG files, atomically, and freeing them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path  # noqa: E402


def save_png(fig: "plt.Figure", path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temp file + rename) and close it; returns the path."""
    dest = Path(path)
    try:
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return dest
