"""Preview images of a volume as a user would see them (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def pick_slices(n_slices: int, count: int = 4) -> list[int]:
    """Evenly spaced interior slice indices (skips the outermost, often empty, slices)."""
    count = max(1, min(count, n_slices))
    return sorted({int(round(x)) for x in np.linspace(0, n_slices - 1, count + 2)[1:-1]} or {n_slices // 2})


def write_slice_montage(canonical_0_255: np.ndarray, path: str | Path, title: str, slices: list[int] | None = None) -> Path:
    """Write a PNG montage of axial slices of a normalised (0..255) canonical volume.

    Slices are shown in radiological convention (canonical LPS arrays: anterior up, patient right on
    the left of the image), each labelled with its slice index.
    """
    slices = slices if slices is not None else pick_slices(canonical_0_255.shape[0])
    fig, axes = plt.subplots(1, len(slices), figsize=(3.2 * len(slices), 3.6), squeeze=False)
    for ax, k in zip(axes[0], slices):
        ax.imshow(canonical_0_255[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"slice {k}")
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return dest
