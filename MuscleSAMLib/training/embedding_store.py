"""Image embeddings of training slices, computed once by a frozen encoder and kept on disk.

Decoder-side fine-tuning (the mask decoder or its output heads, with the image encoder frozen) needs
each training image through the encoder only once; at 1.6 s per LiteMedSAM slice on a 2-core CPU that
is what makes training affordable here. Every variant of a slice that changes pixels needs its own
pass: each Dixon contrast (METHODS.md: water, fat, in-phase W + F, out-of-phase |W - F|, so that T1-,
PD- and GRE-like scans are not new to the model), the left-right mirror, and intensity augmentations.

Files: ``<folder>/<case>__<variant>__s<slice>.safetensors`` holding ``embedding`` (C, h, w) float16,
written atomically, so an interrupted run resumes where it stopped. The encoder input is exactly what
inference feeds (:meth:`~MuscleSAMLib.models.ensemble.Ensemble.preprocess`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..intensity import IntensityWindow, intensity_window, normalize_mri

#: Contrast variants a Dixon pair gives for free, and their mirrored twins (suffix "_flip").
DIXON_CONTRASTS = ("water", "fat", "inphase", "outphase")


@dataclass
class DixonCase:
    """One subject: raw water and fat volumes (canonical, slices first) and the label map."""

    name: str
    water: np.ndarray
    fat: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: Intensity window per contrast, when the arrays are crops of a larger volume (:meth:`legs`): the
    #: whole volume's window, as inference normalises the whole volume before it crops.
    windows: dict[str, IntensityWindow] = field(default_factory=dict)

    def raw_contrast(self, base: str) -> np.ndarray:
        """One contrast's raw intensities (water, fat, in-phase W + F, out-of-phase |W - F|)."""
        w, f = self.water.astype(np.float32), self.fat.astype(np.float32)
        raw = {"water": w, "fat": f, "inphase": w + f, "outphase": np.abs(w - f)}.get(base)
        if raw is None:
            raise ValueError(f"unknown contrast variant {base!r}; known: {', '.join(DIXON_CONTRASTS)} (+ _flip)")
        return raw

    def contrast(self, variant: str) -> np.ndarray:
        """0..255 volume of one contrast (normalised per volume like every model input)."""
        base = variant.replace("_flip", "")
        vol = normalize_mri(self.raw_contrast(base), self.windows.get(base))
        return vol[:, :, ::-1].copy() if variant.endswith("_flip") else vol

    def labels_for(self, variant: str) -> np.ndarray:
        """Label map matching a variant (mirrored for "_flip"; muscle values are per muscle, not per side)."""
        return self.labels[:, :, ::-1].copy() if variant.endswith("_flip") else self.labels

    def legs(self) -> "DixonCase":
        """This case in the "legs" prompt geometry (:mod:`MuscleSAMLib.leg_layout`): every slice's two leg
        crops, cut by the rule inference uses on the water image, stacked along the slice axis (the first
        leg's slices, then the second's; both crops have one shape). Each crop keeps its whole image but
        only the labels on its own side of the midline, as a box there is answered in that crop alone.
        Raises ValueError when the legs are not told apart."""
        from ..leg_layout import leg_layout

        layout = leg_layout(self.contrast("water"))
        if layout is None:
            raise ValueError(f"{self.name}: no gap between the thighs, so the legs geometry cannot crop it")
        own = [layout.columns_of(leg, self.labels.shape[2]) for leg in (0, 1)]
        parts: dict[str, list[np.ndarray]] = {"water": [], "fat": [], "labels": []}
        for (r0, r1, c0, c1), side in zip(layout.windows, own):
            parts["water"].append(self.water[:, r0:r1, c0:c1])
            parts["fat"].append(self.fat[:, r0:r1, c0:c1])
            parts["labels"].append(np.where(side[None, None, c0:c1], self.labels[:, r0:r1, c0:c1], 0))
        return DixonCase(self.name, *(np.concatenate(parts[k], 0) for k in ("water", "fat", "labels")),
                         spacing=self.spacing,
                         windows={c: intensity_window(self.raw_contrast(c)) for c in DIXON_CONTRASTS})

    def labelled_slices(self) -> list[int]:
        """Axial slices holding at least one muscle label."""
        return [int(k) for k in np.nonzero((self.labels > 0).reshape(self.labels.shape[0], -1).any(1))[0]]


def embedding_file(folder: str | os.PathLike, case: str, variant: str, k: int) -> Path:
    """Path of one stored embedding."""
    return Path(folder) / f"{case}__{variant}__s{k:03d}.safetensors"


def precompute(cases: Sequence[DixonCase], variants: Iterable[str], folder: str | os.PathLike,
               preprocess: Callable[[np.ndarray], tuple[torch.Tensor, object]],
               encode: Callable[[torch.Tensor], torch.Tensor], progress: Callable[[str], None] = print,
               key: str = "embedding") -> int:
    """Encode every labelled slice of every case in every variant not yet stored (fp16, under ``key``);
    returns how many were new."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    new = 0
    for variant in variants:
        for case in cases:
            vol = None
            for k in case.labelled_slices():
                path = embedding_file(out, case.name, variant, k)
                if path.is_file():
                    continue
                if vol is None:
                    vol = case.contrast(variant)
                x, _ = preprocess(vol[k])
                with torch.inference_mode():
                    emb = encode(x)[0].to(torch.float16).contiguous()
                with atomic_path(path) as tmp:
                    save_file({key: emb}, str(tmp))
                new += 1
                progress(f"embedded {case.name} {variant} slice {k}")
    return new


def load_embedding(folder: str | os.PathLike, case: str, variant: str, k: int,
                   key: str = "embedding") -> torch.Tensor | None:
    """A stored embedding (or other tensor stored under ``key``) as float32 with a batch axis, e.g.
    (1, C, h, w), or None when it was not computed."""
    from safetensors.torch import load_file

    path = embedding_file(folder, case, variant, k)
    if not path.is_file():
        return None
    return load_file(str(path))[key].float()[None]
