"""Synthetic bilateral thigh Dixon MRI phantoms with exact label truth.

One concern in one file (over 400 lines on purpose): the phantom's anatomy, tissue intensities and
disease grades are tuned together and read best side by side.

Why: tests and benchmarks need thigh-like water/fat volumes whose muscle labels and fat fractions
are known exactly, that are generated in well under a second, and that need no patient data.
They are for exercising code paths (IO, prompting, ensembling, metrics, timing) only; they are
never evidence of segmentation accuracy on real MRI.

What: :func:`make_thigh_phantom` draws two legs side by side along x (the image-left leg is the
patient's right, radiological convention; anterior is low y; z index grows proximally), each
with skin, a subcutaneous fat ring, an off-centre femur (dark cortical ring, fatty marrow) and the
eleven labelled thigh muscles (``Resources/muscle_labels.json``) laid out roughly anatomically
around the femur, separated by thin fat-bright fascia. An unlabelled adductor longus (muscle
tissue, label 0) sits anteromedially, as in real label maps that leave some muscles out. Shapes
vary smoothly with z (slow taper, drifting muscle sizes) and with the seed (random smooth
deformations), fatty infiltration follows the disease grade with smooth patchy variation, and the
images carry a smooth coil bias field and Rician noise.

Array axis order everywhere is (z, y, x), i.e. SimpleITK's ``GetArrayFromImage`` order.

Determinism: everything is drawn from ``np.random.default_rng(seed)``-derived streams. Anatomy,
texture and noise use separate streams, so the same seed gives the same anatomy for every grade,
noise level and muscle subset (only intensities, or only which muscles carry labels, change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError

__all__ = [
    "GRADES",
    "MUSCLE_NAMES",
    "TISSUE_NAMES",
    "PhantomParameterError",
    "ThighPhantom",
    "make_thigh_phantom",
]

#: Mean muscle fat fraction per disease grade.
GRADES: dict[str, float] = {"early": 0.08, "moderate": 0.25, "severe": 0.5}

#: Muscle label values (same for both legs), as in ``Resources/muscle_labels.json``.
MUSCLE_NAMES: dict[int, str] = {
    1: "sartorius",
    2: "rectus femoris",
    3: "vastus lateralis",
    4: "vastus intermedius",
    5: "vastus medialis",
    6: "adductor magnus",
    7: "gracilis",
    8: "biceps femoris long head",
    9: "semitendinosus",
    10: "semimembranosus",
    11: "biceps femoris short head",
}

#: Tissue classes of :attr:`ThighPhantom.tissue`.
TISSUE_NAMES: dict[int, str] = {
    0: "air",
    1: "skin",
    2: "subcutaneous fat",
    3: "muscle",
    4: "fascia",
    5: "cortical bone",
    6: "marrow",
}
AIR, SKIN, SUBCUT_FAT, MUSCLE, FASCIA, CORTEX, MARROW = range(7)

_ADDUCTOR_LONGUS = 12  # internal id of the unlabelled muscle (tissue muscle, label 0)
_MIN_LEG_HALF_WIDTH_VOX = 20.0  # below this the small muscles degenerate to a few voxels
_FOV_PER_HALF_WIDTH = (2.3, 4.6)  # field of view (y, x) in leg half-widths: two legs plus margins


class PhantomParameterError(InputError, ValueError):
    """A phantom argument is invalid (a ``ValueError`` and a user-facing :class:`InputError`)."""


@dataclass(frozen=True)
class ThighPhantom:
    """One synthetic bilateral thigh Dixon volume with its exact truth.

    Attributes:
        water: float32 (z, y, x) water image, MRI-like intensities 0..~1000 (muscle bright).
        fat: float32 (z, y, x) fat image (subcutaneous fat and marrow bright).
        labels: uint8 (z, y, x) muscle labels 0..11 (only the requested muscles are labelled).
        tissue: uint8 (z, y, x) tissue classes, see :data:`TISSUE_NAMES`.
        fat_fraction: float32 (z, y, x) noise-free truth fat/(fat+water) per voxel (0 in air).
        spacing: voxel size (z, y, x) in mm.
        grade: disease grade, a key of :data:`GRADES`.
        seed: the seed it was generated from.
        muscle_names: label value -> muscle name for the labelled muscles.
    """

    water: np.ndarray
    fat: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    fat_fraction: np.ndarray
    spacing: tuple[float, float, float]
    grade: str
    seed: int
    muscle_names: dict[int, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape (z, y, x)."""
        return tuple(self.labels.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Anatomy template. Leg-local normalised coordinates: u points medially, v points posteriorly,
# unit = leg half-width (mm). Blob muscles are ellipses (centre u, v; semi-axes a, b; axis angle
# psi in degrees, measured from +u towards +v) that compete Voronoi-style: a voxel goes to the
# muscle whose ellipse-normalised distance is smallest. The vastus intermedius is a C-shaped
# shell around the femur instead. ``drift`` shifts (du, dv, size factor) per unit of proximal
# position tau in [-1, 1] (about +-200 mm), so muscles change slowly along z.
# --------------------------------------------------------------------------------------------
_BLOBS: dict[int, dict[str, float]] = {
    1: dict(u=0.30, v=-0.46, a=0.14, b=0.075, psi=-35.0),   # sartorius: anteromedial, superficial
    2: dict(u=-0.14, v=-0.56, a=0.18, b=0.11, psi=5.0),     # rectus femoris: anterior-central
    3: dict(u=-0.56, v=-0.06, a=0.36, b=0.19, psi=80.0),    # vastus lateralis: lateral, large
    5: dict(u=0.11, v=-0.34, a=0.16, b=0.12, psi=-20.0),    # vastus medialis: anteromedial, deep
    6: dict(u=0.32, v=0.17, a=0.22, b=0.16, psi=35.0),      # adductor magnus: medial-posterior
    7: dict(u=0.64, v=0.06, a=0.13, b=0.075, psi=80.0),     # gracilis: medial, superficial
    8: dict(u=-0.14, v=0.52, a=0.17, b=0.12, psi=-10.0),    # biceps femoris long head
    9: dict(u=0.18, v=0.56, a=0.14, b=0.11, psi=10.0),      # semitendinosus: posteromedial
    10: dict(u=0.40, v=0.43, a=0.14, b=0.10, psi=40.0),     # semimembranosus: posteromedial
    11: dict(u=-0.33, v=0.27, a=0.12, b=0.09, psi=30.0),    # biceps femoris short head: deep
    12: dict(u=0.40, v=-0.13, a=0.12, b=0.08, psi=60.0),    # adductor longus (unlabelled)
}
_DRIFT: dict[int, tuple[float, float, float]] = {
    1: (-0.06, -0.04, 0.0),   # sartorius runs from anterolateral (proximal) to medial (distal)
    5: (0.0, 0.0, -0.25),     # vastus medialis bulks up distally
    6: (0.0, 0.0, 0.20),      # adductor magnus is larger proximally
    10: (0.0, 0.0, -0.20),    # semimembranosus is larger distally
    11: (0.0, 0.0, -0.30),    # biceps short head is larger distally
    12: (0.0, 0.0, 0.30),     # adductor longus fades distally
}
_FEMUR = dict(u=-0.10, v=-0.12, r_out=0.16, r_in=0.095)
_VI = dict(thickness=0.12, arc_centre_deg=-125.0, arc_half_deg=100.0)  # angle atan2(v, u)
_TEMPLATE_A, _TEMPLATE_B = 0.80, 0.70  # muscle compartment semi-axes (ML, AP) of the template
_INTERMUSCULAR_FAT_SCORE = 0.16  # voxels farther than this from every muscle become fascia/fat
_MIN_MUSCLE_SHARE = 0.045  # each muscle gets at least this share of its leg's compartment slice
_BALANCE_STEP = 0.02  # template units by which an undersized muscle's score drops per round

# Relative susceptibility to fatty replacement (dystrophy-like: adductors and hamstrings first,
# gracilis and sartorius spared); normalised to mean 1 so the muscle mean follows the grade.
_SUSCEPTIBILITY: dict[int, float] = {
    1: 0.6, 2: 0.9, 3: 1.1, 4: 1.0, 5: 1.1, 6: 1.4, 7: 0.6, 8: 1.25, 9: 0.8, 10: 1.25, 11: 1.0,
    12: 1.0,
}

# Tissue proton density (signal scale) and fat fraction. The same scale multiplies water and
# fat, so fat/(fat+water) measured on noise-free images equals the truth fat fraction.
_PD: dict[int, float] = {AIR: 0.0, SKIN: 700.0, SUBCUT_FAT: 960.0, MUSCLE: 800.0, FASCIA: 780.0,
                         CORTEX: 40.0, MARROW: 900.0}
_FF: dict[int, float] = {AIR: 0.0, SKIN: 0.25, SUBCUT_FAT: 0.82, MUSCLE: 0.0, FASCIA: 0.8,
                         CORTEX: 0.3, MARROW: 0.86}


def _validate(shape: Sequence[int], spacing: Sequence[float], grade: str, noise: float,
              muscles: Sequence[int], seed: int) -> tuple[tuple[int, int, int],
                                                       tuple[float, float, float], tuple[int, ...]]:
    """Check the arguments; return normalised shape, spacing and sorted unique muscle labels."""
    if grade not in GRADES:
        raise PhantomParameterError(
            f"unknown grade {grade!r}; choose one of {', '.join(map(repr, GRADES))}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomParameterError(f"seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                  for n in shape):
        raise PhantomParameterError(f"shape must be three integers (z, y, x), got {shape!r}")
    try:
        spacing_ok = len(spacing) == 3 and all(np.isfinite(float(s)) and float(s) > 0
                                                for s in spacing)
    except (TypeError, ValueError):
        spacing_ok = False
    if not spacing_ok:
        raise PhantomParameterError(
            f"spacing must be three positive finite numbers (z, y, x) in mm, got {spacing!r}")
    shp = tuple(int(n) for n in shape)
    spc = tuple(float(s) for s in spacing)
    if shp[0] < 1:
        raise PhantomParameterError(f"shape {shp} has no slices; need at least 1 along z")
    half_width_mm = _leg_half_width_mm(shp, spc)
    min_vox = half_width_mm / max(spc[1], spc[2])
    if min_vox < _MIN_LEG_HALF_WIDTH_VOX:
        need_y = int(np.ceil(_MIN_LEG_HALF_WIDTH_VOX * _FOV_PER_HALF_WIDTH[0]))
        need_x = int(np.ceil(_MIN_LEG_HALF_WIDTH_VOX * _FOV_PER_HALF_WIDTH[1]))
        raise PhantomParameterError(
            f"shape {shp} is too small in-plane: each leg would be only {2 * min_vox:.0f} voxels "
            f"wide (need {2 * _MIN_LEG_HALF_WIDTH_VOX:.0f}); at isotropic in-plane spacing use at "
            f"least y >= {need_y} and x >= {need_x} voxels, e.g. the default (8, 128, 192)")
    if not np.isfinite(noise) or noise < 0 or noise > 1:
        raise PhantomParameterError(
            f"noise must be in [0, 1] (fraction of max signal), got {noise!r}")
    labs: list[int] = []
    valid = ", ".join(f"{k} {v}" for k, v in MUSCLE_NAMES.items())
    for m in muscles:
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) \
                or int(m) not in MUSCLE_NAMES:
            raise PhantomParameterError(
                f"bad muscle label {m!r}; valid labels are 1..11 ({valid})")
        labs.append(int(m))
    return shp, spc, tuple(sorted(set(labs)))  # type: ignore[return-value]


def _leg_half_width_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Leg half-width (medial-lateral, mm) that fits two legs in the field of view."""
    fov_y = shape[1] * spacing[1]
    fov_x = shape[2] * spacing[2]
    return min(fov_y / _FOV_PER_HALF_WIDTH[0], fov_x / _FOV_PER_HALF_WIDTH[1])


def _smooth_series(rng: np.random.Generator, z_mm: np.ndarray, amp: float,
                   n: int = 2) -> np.ndarray:
    """A smooth random function of z (sum of slow sinusoids) with roughly amplitude ``amp``."""
    out = np.zeros_like(z_mm)
    for _ in range(n):
        wavelength = rng.uniform(120.0, 320.0)
        phase = rng.uniform(0, 2 * np.pi)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * z_mm / wavelength + phase)
    return amp * out / n


def _draw_subject(rng: np.random.Generator, z_mm: np.ndarray) -> dict:
    """Draw subject-level anatomy parameters (shared by both legs)."""
    subj: dict = {
        "size": rng.uniform(0.92, 1.0),
        "aspect": rng.uniform(0.84, 0.95),          # AP / ML half-axis ratio
        # Subcutaneous fat thickness as a fraction of the leg half-width (about 6-15 mm for a
        # 65 mm half-width), so the muscle compartment keeps its share on small grids.
        "fat": rng.uniform(0.09, 0.23),
        "fat_phase": rng.uniform(0, 2 * np.pi),
        "fat_mod": rng.uniform(0.15, 0.35),
        "taper_per_mm": rng.uniform(0.0008, 0.0015),
        "blob": {},
    }
    for k, p in _BLOBS.items():
        subj["blob"][k] = dict(
            du=rng.normal(0.0, 0.025), dv=rng.normal(0.0, 0.025),
            fa=rng.uniform(0.88, 1.12), fb=rng.uniform(0.88, 1.12),
            dpsi=rng.normal(0.0, 10.0),
            zu=_smooth_series(rng, z_mm, 0.02), zv=_smooth_series(rng, z_mm, 0.02),
            zs=_smooth_series(rng, z_mm, 0.06),
        )
    subj["femur"] = dict(du=rng.normal(0, 0.02), dv=rng.normal(0, 0.02),
                         fr=rng.uniform(0.92, 1.08), ecc=rng.uniform(0.9, 1.1))
    subj["vi"] = dict(ft=rng.uniform(0.9, 1.15), dc=rng.normal(0, 8.0), dh=rng.normal(0, 6.0))
    subj["susceptibility"] = {k: s * rng.uniform(0.85, 1.15) for k, s in _SUSCEPTIBILITY.items()}
    return subj


def _draw_leg(rng: np.random.Generator, side: int) -> dict:
    """Draw the small per-leg differences (the two legs of one subject are not mirror copies)."""
    harmonics = [(m, rng.uniform(0.0, 0.015), rng.uniform(0, 2 * np.pi)) for m in (2, 3, 4)]
    warps = []
    for _ in range(6):
        ang = rng.uniform(0, 2 * np.pi)
        kmag = 2 * np.pi / rng.uniform(0.45, 1.1)
        warps.append(dict(k=(kmag * np.cos(ang), kmag * np.sin(ang)),
                          kz=2 * np.pi / rng.uniform(150.0, 400.0) * rng.choice([-1, 1]),
                          amp=rng.uniform(0.01, 0.03), dirn=rng.uniform(0, 2 * np.pi),
                          phase=rng.uniform(0, 2 * np.pi)))
    return dict(side=side, rot=np.deg2rad(rng.normal(0.0, 4.0)),
                dcx=rng.normal(0.0, 0.015), dcy=rng.normal(0.0, 0.03), size=rng.uniform(0.98, 1.02),
                harmonics=harmonics, warps=warps,
                jitter={k: (rng.normal(0, 0.012), rng.normal(0, 0.012)) for k in _BLOBS})


def _leg_partition(u: np.ndarray, v: np.ndarray, tau: np.ndarray, z_mm: np.ndarray,
                   subj: dict, leg: dict, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class and muscle id (1..12, 0 none) inside one leg from its local coordinates.

    ``u``, ``v`` are leg-local normalised coordinates (medial, posterior; unit = leg half-width),
    broadcastable (z, y, x); ``tau``/``z_mm`` are per-slice (z, 1, 1).
    """
    # Outline: ellipse with smooth harmonic bumps (evaluated on the undeformed coordinates).
    theta = np.arctan2(v, u)
    r = np.hypot(u, v)
    r_ell = aspect / np.sqrt((aspect * np.cos(theta)) ** 2 + np.sin(theta) ** 2)
    bump = 1.0
    for m, a, ph in leg["harmonics"]:
        bump = bump + a * np.cos(m * theta + ph)
    r_out = r_ell * bump
    scale_mm = leg["scale_mm"]  # (z, 1, 1): leg half-width in mm per slice
    skin = np.maximum(1.2 * leg["min_spacing"], 1.5) / scale_mm
    fat = subj["fat"] * (1.0 + subj["fat_mod"] * np.cos(theta - subj["fat_phase"]))
    r_in = r_out - skin - fat

    inside = r <= r_out
    tissue = np.zeros(np.broadcast_shapes(u.shape, v.shape), np.uint8)
    tissue[inside] = SKIN
    tissue[inside & (r <= r_out - skin)] = SUBCUT_FAT
    compartment = r <= r_in

    # Map the muscle compartment onto the fixed template ellipse so that the muscle layout fills
    # it whatever the fat thickness and outline bumps, then deform it smoothly (per leg, slowly
    # varying along z).
    r_tmpl = _TEMPLATE_A * _TEMPLATE_B / np.sqrt((_TEMPLATE_B * np.cos(theta)) ** 2
                                                 + (_TEMPLATE_A * np.sin(theta)) ** 2)
    stretch = r_tmpl / np.maximum(r_in, 1e-3)
    tu, tv = u * stretch, v * stretch
    uu, vv = tu, tv
    for w in leg["warps"]:
        s = w["amp"] * np.sin(w["k"][0] * tu + w["k"][1] * tv + w["kz"] * z_mm + w["phase"])
        uu = uu + s * np.cos(w["dirn"])
        vv = vv + s * np.sin(w["dirn"])

    # Femur.
    fp = subj["femur"]
    fu, fv = _FEMUR["u"] + fp["du"], _FEMUR["v"] + fp["dv"]
    fr = np.hypot((uu - fu) * fp["ecc"], (vv - fv) / fp["ecc"])
    r_cort = _FEMUR["r_out"] * fp["fr"]
    r_marrow = _FEMUR["r_in"] * fp["fr"]

    # Muscle scores (smaller wins).
    ids = sorted(_BLOBS) + [4]
    scores = np.empty((len(ids),) + tissue.shape, np.float32)
    for i, k in enumerate(sorted(_BLOBS)):
        p, sp = _BLOBS[k], subj["blob"][k]
        ju, jv = leg["jitter"][k]
        du, dv, ds = _DRIFT.get(k, (0.0, 0.0, 0.0))
        cu = p["u"] + sp["du"] + ju + sp["zu"] + du * tau
        cv = p["v"] + sp["dv"] + jv + sp["zv"] + dv * tau
        size = np.clip(1.0 + ds * tau + sp["zs"], 0.6, 1.5)
        a = p["a"] * sp["fa"] * size
        b = p["b"] * sp["fb"] * size
        psi = np.deg2rad(p["psi"] + sp["dpsi"])
        du_, dv_ = uu - cu, vv - cv
        along = du_ * np.cos(psi) + dv_ * np.sin(psi)
        across = -du_ * np.sin(psi) + dv_ * np.cos(psi)
        # ~signed distance to the ellipse outline, so neighbours split the gap between them
        # evenly whatever their size (plain normalised distance starves small muscles).
        scores[i] = (np.sqrt((along / a) ** 2 + (across / b) ** 2) - 1.0) * np.sqrt(a * b)
    vp = subj["vi"]
    ang = np.arctan2(vv - fv, uu - fu)
    centre = np.deg2rad(_VI["arc_centre_deg"] + vp["dc"])
    half = np.deg2rad(_VI["arc_half_deg"] + vp["dh"])
    dang = np.abs(np.angle(np.exp(1j * (ang - centre))))
    # Crescent: full thickness at the arc centre, tapering smoothly to nothing at its ends.
    vi_score = np.maximum(fr - r_cort, 0.0) \
        - _VI["thickness"] * vp["ft"] * (1.0 - (dang / half) ** 4)
    scores[-1] = vi_score
    # Size balancing: random deformations can squeeze a small muscle; per slice, grow any muscle
    # below a minimum share of the compartment by lowering its score a little, a few rounds.
    eligible = compartment & (fr > r_cort)
    target = _MIN_MUSCLE_SHARE * eligible.sum(axis=(-2, -1))  # (z,)
    for _ in range(10):
        best = np.argmin(scores, axis=0)
        best_score = np.take_along_axis(scores, best[None], axis=0)[0]
        owned = eligible & (best_score <= _INTERMUSCULAR_FAT_SCORE)
        area = np.stack([(owned & (best == i)).sum(axis=(-2, -1)) for i in range(len(ids))])
        small = area < target[None]
        if not small.any():
            break
        scores -= np.where(small, _BALANCE_STEP, 0.0).astype(np.float32)[:, :, None, None]
    muscle_id = np.asarray(ids, np.uint8)[best]

    tissue[compartment] = MUSCLE
    fatty_gap = compartment & (best_score > _INTERMUSCULAR_FAT_SCORE)
    tissue[fatty_gap] = FASCIA
    tissue[compartment & (fr <= r_cort)] = CORTEX
    tissue[compartment & (fr <= r_marrow)] = MARROW
    muscle_id = np.where(tissue == MUSCLE, muscle_id, 0).astype(np.uint8)
    return tissue, muscle_id


def _add_fascia(tissue: np.ndarray, muscle_id: np.ndarray, width: int) -> None:
    """Turn muscle voxels that touch a different muscle (in-plane) into fascia, in place.

    One-sided rule: of each 4-adjacent pair of differing muscles only the first voxel (lower y or
    lower x) becomes fascia, which gives ``width``-voxel lines and guarantees that no two different
    muscles stay 4-connected afterwards.
    """
    mark = np.zeros(muscle_id.shape, bool)
    for d in range(1, width + 1):
        a, b = muscle_id[:, :-d, :], muscle_id[:, d:, :]
        mark[:, :-d, :] |= (a > 0) & (b > 0) & (a != b)
        a, b = muscle_id[:, :, :-d], muscle_id[:, :, d:]
        mark[:, :, :-d] |= (a > 0) & (b > 0) & (a != b)
    tissue[mark] = FASCIA
    muscle_id[mark] = 0


def _keep_largest_components(tissue: np.ndarray, muscle_id: np.ndarray,
                             leg_of_x: np.ndarray) -> None:
    """Per slice, leg and muscle keep only the largest 4-connected piece; the rest becomes fascia.

    Guarantees each muscle is a single region per leg and slice (ellipse competition and fascia
    lines can rarely cut off slivers).
    """
    for z in range(muscle_id.shape[0]):
        sl = muscle_id[z]
        for k in np.unique(sl):
            if k == 0:
                continue
            comp, n = ndi.label(sl == k)
            if n <= 1:
                continue
            keep = np.zeros(n + 1, bool)
            for leg in (0, 1):  # legs never touch, so every piece lies within one leg
                counts = np.bincount(comp[:, leg_of_x == leg].ravel(), minlength=n + 1)
                counts[0] = 0
                if counts.any():
                    keep[int(counts.argmax())] = True
            drop = (comp > 0) & ~keep[comp]
            if drop.any():
                tissue[z][drop] = FASCIA
                sl[drop] = 0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int],
                  spacing: tuple[float, float, float],
                  sigma_mm: tuple[float, float, float]) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-blurred white noise (for patchy fat infiltration)."""
    sig = tuple(max(s / d, 0.0) for s, d in zip(sigma_mm, spacing))
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sig, mode="wrap")
    std = float(field.std())
    return field / std if std > 0 else field


def _bias_field(rng: np.random.Generator, zc: np.ndarray, yc: np.ndarray,
                xc: np.ndarray) -> np.ndarray:
    """Smooth multiplicative coil bias (low-order polynomial, about 0.8..1.2)."""
    c = rng.normal(0.0, 1.0, 6)
    b = (c[0] * yc + c[1] * xc + c[2] * yc * xc + c[3] * (yc ** 2 - 0.3) + c[4] * (xc ** 2 - 0.3)
         + c[5] * zc)
    b = b / (np.abs(c).sum() + 1e-9)
    return (1.0 + 0.2 * b).astype(np.float32)


def make_thigh_phantom(seed: int = 0, shape: tuple[int, int, int] = (8, 128, 192),
                       spacing: tuple[float, float, float] = (6.0, 1.5, 1.5), grade: str = "early",
                       noise: float = 0.02,
                       muscles: Sequence[int] = tuple(range(1, 12))) -> ThighPhantom:
    """Generate a deterministic synthetic bilateral thigh Dixon volume with exact truth.

    Args:
        seed: random seed; identical arguments give bit-identical output.
        shape: (z, y, x) voxels. The legs are scaled to the field of view; it must leave each leg
            at least ~32 voxels wide.
        spacing: (z, y, x) voxel size in mm.
        grade: disease grade, a key of :data:`GRADES`, setting the mean muscle fat fraction.
        noise: Rician noise standard deviation as a fraction of the maximum noise-free signal.
        muscles: which labels (1..11) to write into ``labels``. The image is the same for every
            subset: muscles left out stay muscle tissue with label 0.

    Returns:
        A :class:`ThighPhantom`. Every requested muscle appears on every slice of both legs as one
        4-connected region (at the default shape, at least ~40 voxels each).

    Raises:
        PhantomParameterError: (a ``ValueError``) unknown grade, too-small shape, bad spacing,
            noise or muscle label.
    """
    shp, spc, labs = _validate(shape, spacing, grade, noise, muscles, seed)
    nz, ny, nx = shp
    root = np.random.SeedSequence(int(seed))
    anat_rng, tex_rng, noise_rng = (np.random.default_rng(s) for s in root.spawn(3))

    # Physical coordinates (mm), centred in the field of view.
    z_mm = ((np.arange(nz) - (nz - 1) / 2.0) * spc[0]).reshape(nz, 1, 1)
    y_mm = ((np.arange(ny) - (ny - 1) / 2.0) * spc[1]).reshape(1, ny, 1)
    x_mm = ((np.arange(nx) - (nx - 1) / 2.0) * spc[2]).reshape(1, 1, nx)
    tau = np.clip(z_mm / 200.0, -1.0, 1.0)  # proximal position, drives anatomical drift

    subj = _draw_subject(anat_rng, z_mm)
    legs = [_draw_leg(anat_rng, side) for side in (-1, 1)]  # image-left leg first
    half_width = _leg_half_width_mm(shp, spc) * subj["size"]
    # Slow taper (wider proximally), normalised so the widest slice fits the field of view.
    taper = 1.0 + subj["taper_per_mm"] * np.clip(z_mm, -250.0, 250.0)
    taper = taper / float(taper.max())

    tissue = np.zeros(shp, np.uint8)
    muscle_id = np.zeros(shp, np.uint8)
    leg_of_x = (x_mm[0, 0] >= 0).astype(np.int8)  # 0 image-left leg, 1 image-right leg
    for leg_index, leg in enumerate(legs):
        side = leg["side"]
        scale_mm = half_width * leg["size"] * taper  # (z, 1, 1)
        leg["scale_mm"] = scale_mm
        leg["min_spacing"] = min(spc[1], spc[2])
        cx = side * half_width * (1.09 + leg["dcx"])
        cy = half_width * leg["dcy"]
        # Leg-local normalised coordinates: u medial, v posterior, with a small rotation.
        cols = leg_of_x == leg_index
        xs = x_mm[..., cols]
        uu0 = -side * (xs - cx) / scale_mm
        vv0 = (y_mm - cy) / scale_mm
        cr, sr = np.cos(leg["rot"]), np.sin(leg["rot"])
        u = cr * uu0 - sr * vv0
        v = sr * uu0 + cr * vv0
        t_leg, m_leg = _leg_partition(u, v, tau, z_mm, subj, leg, subj["aspect"])
        tissue[..., cols] = t_leg
        muscle_id[..., cols] = m_leg

    width = max(1, int(round(1.0 / min(spc[1], spc[2]))))
    _add_fascia(tissue, muscle_id, width)
    _keep_largest_components(tissue, muscle_id, leg_of_x)

    # Truth fat fraction: tissue constants, muscles at grade mean with patchy variation.
    mean_ff = GRADES[grade]
    lut_ff = np.array([_FF[t] for t in range(7)], np.float32)
    ff = lut_ff[tissue]
    patch = _smooth_noise(tex_rng, shp, spc, (40.0, 7.0, 7.0))
    fine = _smooth_noise(tex_rng, shp, spc, (12.0, 2.0, 2.0))
    susc = np.ones(_ADDUCTOR_LONGUS + 1, np.float32)
    for k, val in subj["susceptibility"].items():
        susc[k] = val
    is_muscle = tissue == MUSCLE
    susc_vox = susc[muscle_id]
    # Area-weighted mean susceptibility 1, so the muscle mean follows the grade.
    susc_vox /= float(susc_vox[is_muscle].mean()) if is_muscle.any() else 1.0
    spread = 0.25 + 0.2 * mean_ff  # relative patchiness grows with severity
    texture = 1.5 * patch + 0.5 * fine
    texture -= float(texture[is_muscle].mean()) if is_muscle.any() else 0.0  # keep the grade mean
    muscle_ff = mean_ff * susc_vox * (1.0 + spread * texture)
    ff = np.where(is_muscle, np.clip(muscle_ff, 0.0, 1.0), ff).astype(np.float32)
    marrow = tissue == MARROW
    ff[marrow] = np.clip(ff[marrow] + 0.04 * fine[marrow], 0.0, 1.0)

    lut_pd = np.array([_PD[t] for t in range(7)], np.float32)
    pd = lut_pd[tissue] * (1.0 + 0.03 * fine)
    zc = z_mm / max(float(np.abs(z_mm).max()), 1.0) * 0.5
    yc = y_mm / float(np.abs(y_mm).max())
    xc = x_mm / float(np.abs(x_mm).max())
    bias = _bias_field(anat_rng, zc, yc, xc)
    water_clean = (1.0 - ff) * pd * bias
    fat_clean = ff * pd * bias
    sigma = noise * float(max(water_clean.max(), fat_clean.max()))
    water = _rician(noise_rng, water_clean, sigma)
    fat = _rician(noise_rng, fat_clean, sigma)

    labels = np.where(np.isin(muscle_id, labs), muscle_id, 0).astype(np.uint8)
    return ThighPhantom(
        water=water, fat=fat, labels=labels, tissue=tissue, fat_fraction=ff.astype(np.float32),
        spacing=spc, grade=grade, seed=int(seed),
        muscle_names={k: MUSCLE_NAMES[k] for k in labs},
    )


def _rician(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the clean signal plus complex Gaussian noise (Rician), float32."""
    if sigma <= 0:
        return clean.astype(np.float32)
    re = clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32)
    im = rng.normal(0.0, sigma, clean.shape).astype(np.float32)
    return np.hypot(re, im).astype(np.float32)
