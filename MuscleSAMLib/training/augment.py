"""Random intensity augmentation of a training slice (METHODS.md step 8), so that other contrasts are not new.

The thigh data are Dixon water and fat images of two subjects; radiologists also bring T1-, PD- and
GRE-weighted scans, other coils (bias fields) and noisier protocols. Each training draw changes the
slice's intensities the way those scans differ, never its geometry (so boxes and targets stay valid):

- a smooth multiplicative bias field: exp of a random quadratic in the slice's normalised coordinates,
  its log amplitude up to ``bias`` (receive-coil shading);
- a gamma curve, exponent log-uniform in ``gamma`` (T1/PD-like contrast between fat and muscle);
- contrast (x 1 + U(-``contrast``, ``contrast``)) and brightness (+ U(-``brightness``, ``brightness``) of
  the range) changes;
- with probability ``invert_prob``, the body's intensities inverted (voxels above 5 % of the range:
  fat dark and muscle bright, as on a water image, or the reverse), the background left dark;
- Gaussian noise, standard deviation uniform in 0..``noise`` of the range, on the body only;
- with probability ``blur_prob``, a Gaussian blur of ``blur_sigma`` pixels (thicker slices, lower
  resolution).

Input and output are slices (or crops) on the model's 0..255 scale
(:func:`~MuscleSAMLib.intensity.normalize_mri`); voxels that are exactly 0 (outside the field of view)
stay 0, as normalisation keeps them. :data:`STRONG` is the LiteMedSAM recipe's (``augment``);
:data:`MILD` the small-model trainer's (``aug_intensity``, scaled by ``aug_strength``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

BODY_THRESHOLD = 0.05  # fraction of the 0..255 range above which a voxel counts as body (inversion, noise)


@dataclass(frozen=True)
class IntensityAugment:
    """Ranges of each random change (see the module docstring)."""

    bias: float = 0.3
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: float = 0.0
    brightness: float = 0.0
    invert_prob: float = 0.15
    noise: float = 0.04
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.2)

    def scaled(self, strength: float) -> "IntensityAugment":
        """The same kinds of change with their strengths (bias, gamma, contrast, brightness, noise; not the
        probabilities or the blur width) scaled by ``strength``."""
        lo, hi = (float(np.exp(np.log(g) * strength)) for g in self.gamma)
        return replace(self, bias=self.bias * strength, gamma=(lo, hi), contrast=self.contrast * strength,
                       brightness=self.brightness * strength, noise=self.noise * strength)


STRONG = IntensityAugment()
MILD = IntensityAugment(bias=0.0, gamma=(float(np.exp(-0.3)), float(np.exp(0.3))), contrast=0.15,
                        brightness=15 / 255, invert_prob=0.0, noise=0.0, blur_prob=0.0)


def bias_field(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp(random quadratic in x, y in [-1, 1]), the log field scaled to at most ``amplitude`` in magnitude."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0], dtype=np.float32),
                       np.linspace(-1, 1, shape[1], dtype=np.float32), indexing="ij")
    terms = np.stack([x, y, x * x, y * y, x * y])
    log = np.tensordot(rng.uniform(-1, 1, 5).astype(np.float32), terms, axes=1)
    peak = float(np.abs(log).max())
    if peak > 0:
        log *= rng.uniform(0, amplitude) / peak
    return np.exp(log)


def augment_slice(slice_0_255: np.ndarray, rng: np.random.Generator,
                  aug: IntensityAugment = STRONG) -> np.ndarray:
    """One random intensity variant of a (rows, cols) 0..255 slice, float32 0..255 (zeros kept at 0)."""
    s = np.asarray(slice_0_255, np.float32)
    if s.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {s.shape}")
    outside = s == 0
    x = np.clip(s / 255.0, 0.0, 1.0)
    if aug.bias > 0:  # shade, then bring the brightest voxel back to the top of the range
        x = x * bias_field(s.shape, aug.bias, rng)
        x = np.clip(x / max(float(x.max()), 1e-6), 0.0, 1.0)
    x = x ** float(np.exp(rng.uniform(*np.log(aug.gamma))))
    if aug.contrast > 0 or aug.brightness > 0:
        x = x * (1.0 + rng.uniform(-aug.contrast, aug.contrast)) + rng.uniform(-aug.brightness, aug.brightness)
    body = x > BODY_THRESHOLD
    if aug.invert_prob > 0 and rng.random() < aug.invert_prob:
        x = np.where(body, 1.0 - x + BODY_THRESHOLD, x)
    if aug.noise > 0:
        x = x + body * rng.normal(0.0, rng.uniform(0, aug.noise), s.shape).astype(np.float32)
    if aug.blur_prob > 0 and rng.random() < aug.blur_prob:
        x = _blur(x, float(rng.uniform(*aug.blur_sigma)))
    x = np.clip(x, 0.0, 1.0) * 255.0
    x[outside] = 0.0
    return x.astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2D array (SimpleITK's recursive Gaussian, unit pixel spacing)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(x), sigma))
