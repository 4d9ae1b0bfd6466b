"""Biomarker tables and plot: CSV (one row per muscle and side) and per-muscle bars with member intervals."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..atomic import write_text_atomic
from .figures import new_figure, save_png
from ..biomarkers import Biomarkers

CSV_COLUMNS = ("label", "muscle", "side", "volume_ml", "volume_ml_min", "volume_ml_max", "mean_csa_mm2",
               "mean_csa_mm2_min", "mean_csa_mm2_max", "n_slices", "fat_fraction_mean", "fat_fraction_mean_min",
               "fat_fraction_mean_max", "fat_fraction_median", "fat_fraction_median_min", "fat_fraction_median_max")


def _pair(v: tuple[float, float] | None) -> tuple[str, str]:
    return ("", "") if v is None else (f"{v[0]:.6g}", f"{v[1]:.6g}")


def write_biomarker_csv(rows: Sequence[Biomarkers], names: Mapping[int, dict], path: str | Path) -> Path:
    """One row per muscle and side; interval columns ``*_min``/``*_max`` over ensemble members."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for b in rows:
        fmt = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
        w.writerow([b.label, names.get(b.label, {}).get("name", b.label), b.side, fmt(b.volume_ml), *_pair(b.volume_ml_interval),
                    fmt(b.mean_csa_mm2), *_pair(b.mean_csa_mm2_interval), b.n_slices, fmt(b.fat_fraction_mean),
                    *_pair(b.fat_fraction_mean_interval), fmt(b.fat_fraction_median), *_pair(b.fat_fraction_median_interval)])
    return write_text_atomic(path, buf.getvalue())


def write_biomarker_plot(rows: Sequence[Biomarkers], names: Mapping[int, dict], path: str | Path, title: str = "") -> Path:
    """Bars per muscle (right and left side) of volume and, when present, fat fraction, with member intervals."""
    sided = [b for b in rows if b.side in ("right", "left")]
    labels = sorted({b.label for b in sided})
    has_ff = any(b.fat_fraction_mean is not None for b in sided)
    fig, axes = new_figure(2 if has_ff else 1, 1, figsize=(max(6, 0.9 * len(labels) + 2), 6 if has_ff else 3.4), squeeze=False)
    x = np.arange(len(labels))
    for row, (attr, unit) in enumerate([("volume_ml", "volume (ml)")] + ([("fat_fraction_mean", "mean fat fraction")] if has_ff else [])):
        ax = axes[row][0]
        for off, side, color in ((-0.2, "right", "C0"), (0.2, "left", "C1")):
            vals, lo, hi = [], [], []
            for lab in labels:
                b = next((r for r in sided if r.label == lab and r.side == side), None)
                v = getattr(b, attr) if b else None
                iv = getattr(b, attr + "_interval") if b else None
                vals.append(np.nan if v is None else v)
                lo.append(0 if iv is None or v is None else max(v - iv[0], 0))
                hi.append(0 if iv is None or v is None else max(iv[1] - v, 0))
            ax.bar(x + off, vals, width=0.4, color=color, label=f"patient {side}", yerr=[lo, hi], capsize=2)
        ax.set_ylabel(unit)
        ax.set_xticks(x, [names.get(lab, {}).get("abbrev", str(lab)) for lab in labels])
        ax.legend(fontsize=8)
    axes[0][0].set_title((title + "\n" if title else "") + "error bars: min-max over ensemble members")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
