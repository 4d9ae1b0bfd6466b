"""Overlay pictures: MRI, muscle outlines in their colours, and the uncertainty heatmap with a colour bar.

What the radiologist sees in the module, as a PNG for reports and the CLI. Uncertainty is shown
normalised to [0, 1] (total entropy / log 2), transparent below ``threshold`` so certain voxels show
the MRI, with the perceptual ``inferno`` map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .figures import new_figure, save_png


def write_overlay(mri_0_255: np.ndarray, labels: np.ndarray, uncertainty01: np.ndarray, slices: Sequence[int],
                  path: str | Path, segments: Mapping[int, dict], title: str = "", threshold: float = 0.1,
                  boxes: Sequence | None = None) -> Path:
    """Write a PNG with one panel per slice: MRI, outlines, heatmap; one shared colour bar.

    Arrays are canonical (slices, rows, cols). ``boxes`` (optional BoxPrompts) are drawn dashed.
    """
    slices = list(slices)
    fig, axes = new_figure(1, len(slices), figsize=(max(4.2 * len(slices) + 0.8, 7.5), 5.2), squeeze=False)
    heat_cmap = matplotlib.colormaps["inferno"].copy()
    heat_cmap.set_bad(alpha=0.0)
    im = None
    present: set[int] = set()
    for ax, k in zip(axes[0], slices):
        ax.imshow(mri_0_255[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        heat = np.ma.masked_less(uncertainty01[k], threshold)
        im = ax.imshow(heat, cmap=heat_cmap, vmin=0.0, vmax=1.0, alpha=0.6, interpolation="nearest")
        for value in np.unique(labels[k]):
            if value == 0:
                continue
            present.add(int(value))
            color = np.array(segments.get(int(value), {}).get("color", (0, 255, 0))) / 255.0
            ax.contour(labels[k] == value, levels=[0.5], colors=[color], linewidths=1.0)
        for b in boxes or []:
            if b.slice == k:
                c0, r0, c1, r1 = b.xyxy
                ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ls="--", lw=0.6, ec="cyan"))
        ax.set_title(f"axial slice {k}")
        ax.axis("off")
    if im is not None:
        bar = fig.colorbar(im, ax=axes[0].tolist(), fraction=0.025, pad=0.01)
        bar.set_label("total uncertainty (entropy / log 2)")
    handles = [Line2D([0], [0], color=np.array(segments[v].get("color", (0, 255, 0))) / 255.0, lw=2,
                      label=segments[v].get("abbrev", str(v))) for v in sorted(present) if v in segments]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6 if len(slices) < 3 else 11), fontsize=8, frameon=False)
    fig.suptitle(title + "\nresearch use only, not for clinical use", fontsize=10)
    return save_png(fig, path, dpi=110)
