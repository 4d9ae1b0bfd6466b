"""Training configuration (JSON) with strict validation: every problem is one clear error, raised
before any training starts (unknown key, wrong type, bad value, missing file).

Example (all keys except ``data`` optional)::

    {"name": "thigh_demo", "arch": "demo_xs", "mode": "E+D",
     "data": {"train": [{"image": "a_water.nii.gz", "labels": "a_labels.nii.gz"}],
              "val": [{"image": "b_water.nii.gz", "labels": "b_labels.nii.gz"}]},
     "prompt_geometry": "box_crop", "crop_margin": 0.25, "box_mask_prompt": true,
     "steps": 1500, "batch_size": 16, "lr": 3e-4}

Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from ..models.architectures import ARCHITECTURES, ArchSpec

MODES = ("E+D", "D", "LoRA")
LOSSES = ("dice_bce", "umedsam")
from ..models.manifest import KINDS, PROMPT_GEOMETRIES as GEOMETRIES  # noqa: E402 - defined once


class ConfigError(InputError):
    """The training configuration is invalid (the message names the key and the problem)."""


@dataclass(frozen=True)
class CaseSpec:
    """One patient: an image (model input) and its label map on the same grid."""

    image: str
    labels: str
    name: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """All settings of one ``musclesam train`` run (see module docstring for the JSON form)."""

    train: tuple[CaseSpec, ...]
    val: tuple[CaseSpec, ...] = ()
    name: str = "musclesam_ensemble"
    arch: Any = "demo_xs"                 # registry name or inline ArchSpec dict
    init: str | None = None               # full SAM/MedSAM checkpoint to start from (None = scratch)
    mode: str = "E+D"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    prompt_geometry: str = "box_crop"
    crop_margin: float = 0.25
    box_mask_prompt: bool = True
    box_mask_logit: float = 4.0
    labels: tuple[int, ...] = ()          # muscle label values to train on (empty = all non-zero)
    folds: int = 0                        # >0: pool train+val, patient-level K folds
    fold: int = 0
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    loss: str = "dice_bce"
    iou_loss_weight: float = 1.0
    sam_rho: float = 0.0                  # > 0 turns on Sharpness-Aware Minimisation
    jitter: float = 0.1                   # outward jitter per box side, fraction of the side
    jitter_px: int = 2                    # ... at least this many pixels
    aug_intensity: bool = True
    aug_flip: bool = True
    aug_scale: float = 0.1                # random crop-margin scale (+-), box_crop only
    mirror: bool = False                  # add left-right mirrored copies of every training slice
    val_every: int = 100
    patience: int = 10                    # validations without improvement before stopping
    seed: int = 0
    members: int = 1
    ensemble_kind: str = "decoder"        # decoder: shared encoder + M (prompt encoder + decoder)
    member_steps: int = 300               # decoder kind: fine-tuning steps per member (D mode)
    member_lr: float = 1e-4
    member_variants: int = 4              # decoder kind: augmented copies per sample to pre-embed
    member_folds: bool = False            # members also differ in training fold (needs folds > 1)
    phantoms: int = 0                     # synthetic thigh phantoms (MuscleSAMLib.phantoms) added to training
    temperature: float = 1.0              # logit temperature baked into the members; 0 = fit on validation (NLL)
    aug_strength: float = 1.0             # scales the brightness/contrast/gamma augmentation ranges
    threads: int = 0                      # torch threads (0 = leave as is)
    amp: bool = True                      # mixed precision on CUDA
    checkpoint_every: int = 100
    manifest_name: str = ""
    description: str = ""
    licence: str = "Apache-2.0"
    version: str = "0.1.0"
    default: bool = False
    source: str = ""                      # config file path (set by the loader)

    @property
    def arch_spec(self) -> ArchSpec:
        """The resolved architecture."""
        if isinstance(self.arch, str):
            return ARCHITECTURES[self.arch]
        return ArchSpec.from_dict(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (round-trips through :func:`parse_config`)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        d["data"] = {"train": [dataclasses.asdict(c) for c in self.train],
                     "val": [dataclasses.asdict(c) for c in self.val]}
        d.pop("train"), d.pop("val")
        d["labels"] = list(self.labels)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_ALLOWED = (set(_FIELDS) - {"train", "val", "source"}) | {"data"}
_CHOICES = {"mode": MODES, "loss": LOSSES, "prompt_geometry": GEOMETRIES, "ensemble_kind": KINDS}
_MIN = {"lora_rank": 1, "steps": 1, "batch_size": 1, "val_every": 1, "patience": 1, "members": 1,
        "member_steps": 0, "member_variants": 1, "folds": 0, "fold": 0, "warmup_steps": 0,
        "phantoms": 0, "threads": 0, "checkpoint_every": 1, "jitter_px": 0, "seed": 0}
_RANGE = {"lr": (0.0, 1.0), "member_lr": (0.0, 1.0), "weight_decay": (0.0, 10.0), "grad_clip": (0.0, 1e6),
          "iou_loss_weight": (0.0, 100.0), "sam_rho": (0.0, 10.0), "jitter": (0.0, 1.0), "aug_scale": (0.0, 0.9),
          "crop_margin": (0.0, 10.0), "aug_strength": (0.0, 3.0), "temperature": (0.0, 20.0), "box_mask_logit": (0.0, 100.0), "lora_alpha": (0.0, 1e4)}


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"training config {where}: {msg}")


def _cases(raw: Any, key: str, where: str, folder: Path) -> tuple[CaseSpec, ...]:
    if not isinstance(raw, list):
        raise _fail(where, f"data.{key} must be a list of {{image, labels[, name]}}")
    out = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            raise _fail(where, f"data.{key}[{i}] must be an object {{image, labels[, name]}}")
        unknown = sorted(set(c) - {"image", "labels", "name"})
        if unknown:
            raise _fail(where, f"data.{key}[{i}] has unknown keys {unknown}; allowed: image, labels, name")
        paths = []
        for k in ("image", "labels"):
            v = c.get(k)
            if not isinstance(v, str) or not v:
                raise _fail(where, f"data.{key}[{i}].{k} must be a file path")
            p = Path(v).expanduser()
            p = p if p.is_absolute() else folder / p
            if not p.is_file():
                raise _fail(where, f"data.{key}[{i}].{k}: file {p} not found")
            paths.append(str(p))
        name = c.get("name") or Path(paths[0]).name.split(".")[0]
        if not isinstance(name, str):
            raise _fail(where, f"data.{key}[{i}].name must be a string")
        out.append(CaseSpec(paths[0], paths[1], name))
    return tuple(out)


def parse_config(data: Any, where: str = "(in memory)", folder: str | os.PathLike = ".",
                 overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Validate decoded JSON (plus CLI ``overrides``) into a :class:`TrainConfig`."""
    if not isinstance(data, dict):
        raise _fail(where, "must be a JSON object")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        raise _fail(where, f"unknown keys {unknown}; allowed: {sorted(_ALLOWED)}")
    if "data" not in data:
        raise _fail(where, "missing 'data' ({\"train\": [...], \"val\": [...]})")
    d = data["data"]
    if not isinstance(d, dict) or set(d) - {"train", "val"} or "train" not in d:
        raise _fail(where, "data must be an object with 'train' (and optionally 'val') lists")
    folder = Path(folder)
    kw: dict[str, Any] = {"train": _cases(d["train"], "train", where, folder),
                          "val": _cases(d.get("val", []), "val", where, folder)}
    if not kw["train"]:
        raise _fail(where, "data.train is empty")
    for k, v in data.items():
        if k == "data":
            continue
        kw[k] = _check_value(k, v, where, folder)
    cfg = TrainConfig(**kw, source=where)
    _check_cross(cfg, where)
    return cfg


def _check_value(k: str, v: Any, where: str, folder: Path) -> Any:
    f = _FIELDS[k]
    default = f.default
    if k == "arch":
        if isinstance(v, str):
            if v not in ARCHITECTURES:
                raise _fail(where, f"arch {v!r} unknown; known: {', '.join(sorted(ARCHITECTURES))} (or an inline object)")
            return v
        if isinstance(v, dict):
            try:
                ArchSpec.from_dict(v)
            except Exception as exc:  # WeightsError with the reason
                raise _fail(where, f"arch: {exc}") from None
            return dict(v)
        raise _fail(where, "arch must be a registry name or an object")
    if k == "init":
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise _fail(where, "init must be a checkpoint path or null")
        p = Path(v).expanduser()
        p = p if p.is_absolute() else folder / p
        if not p.is_file():
            raise _fail(where, f"init: checkpoint {p} not found")
        return str(p)
    if k == "labels":
        if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in v):
            raise _fail(where, "labels must be a list of positive integers")
        return tuple(v)
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise _fail(where, f"{k} must be true or false (JSON boolean), got {v!r}")
        return v
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(where, f"{k} must be an integer, got {v!r}")
        if v < _MIN.get(k, 0):
            raise _fail(where, f"{k} must be >= {_MIN.get(k, 0)}, got {v}")
        return v
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(where, f"{k} must be a number, got {v!r}")
        lo, hi = _RANGE.get(k, (float("-inf"), float("inf")))
        if not lo <= v <= hi or (k in ("lr", "member_lr") and v <= 0):
            raise _fail(where, f"{k} must be in {'(' if k.endswith('lr') else '['}{lo}, {hi}], got {v}")
        return float(v)
    if isinstance(default, str):
        if not isinstance(v, str):
            raise _fail(where, f"{k} must be a string, got {v!r}")
        if k in _CHOICES and v not in _CHOICES[k]:
            raise _fail(where, f"{k} {v!r} is not one of {', '.join(_CHOICES[k])}")
        return v
    return v


def _check_cross(c: TrainConfig, where: str) -> None:
    if c.folds == 1:
        raise _fail(where, "folds must be 0 (use train/val as given) or >= 2")
    if c.folds and c.fold >= c.folds:
        raise _fail(where, f"fold {c.fold} must be < folds {c.folds}")
    n_cases = len(c.train) + len(c.val)
    if c.folds and c.folds > n_cases:
        raise _fail(where, f"folds {c.folds} exceeds the number of patients ({n_cases})")
    if c.member_folds and c.folds < 2:
        raise _fail(where, "member_folds needs folds >= 2")
    if c.mode == "D" and c.init is None:
        raise _fail(where, "mode D trains the decoder only: it needs init (a trained checkpoint)")
    if c.ensemble_kind == "lora" and c.mode != "LoRA":
        raise _fail(where, "ensemble_kind lora needs mode LoRA")
    if c.prompt_geometry == "slice" and c.aug_scale:
        pass  # scale augmentation only applies to crops; harmless otherwise
    if c.temperature == 0 and not c.val and c.folds < 2:
        raise _fail(where, "temperature 0 (fit on validation) needs validation data (data.val or folds)")
    if c.warmup_steps >= c.steps and c.steps > 1:
        raise _fail(where, f"warmup_steps {c.warmup_steps} must be < steps {c.steps}")


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read and validate a config file (errors name the file)."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read training config {p}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"training config {p} is not valid JSON: {exc}") from None
    return parse_config(data, str(p), p.resolve().parent, overrides)
