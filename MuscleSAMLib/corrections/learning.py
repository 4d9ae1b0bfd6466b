"""Learn from corrections: fine-tune a ``decoder`` ensemble's heads on corrected bundles (issue 7, item 4).

``musclesam train --from-bundles B1 [B2 ...] --base-ensemble NAME`` runs, in order:

1. :func:`plan_learning` checks everything before any training (one-line :class:`InputError` /
   :class:`WeightsError`): the base entry (kind ``decoder``, files present), each bundle
   (:func:`read_bundle`: required files, JSON, label map, edit map consistent with prediction vs
   correction, the image on the bundle's grid), the held-out cases, and that the weights folder is writable.
2. :func:`learn` embeds jittered/augmented renders of every corrected box once with the base's shared
   encoder (``D`` mode), then fine-tunes each member head from its own weights with its own seed
   (the base's baked temperature is taken out first and put back after), writes the new member files
   beside the manifest (atomically), evaluates base and new ensemble on the corrected cases and the
   held-out cases (:func:`MuscleSAMLib.pipelines.evaluate.evaluate_case`), and only then adds the new entry to the
   manifest (under a lock, atomic replace; ``default`` untouched). Anything that fails or is interrupted
   before that removes the new member files: the manifest is never left naming missing files.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, WeightsError
from ..models.manifest import EnsembleSpec, WeightFile, load_manifest, replace_spec
from ..models.manifest_writer import add_entry
from ..models.safe_load import sha256_file
from ..result_folders import check_replaceable, publish_folder
from ..version import __version__
from ..outputs.corrected_cases import CorrectedCase, bundle_sha256, read_bundle  # noqa: F401 - re-exported
from .learning_report import EVAL_METRICS, REGRESSION_METRICS, _delta, _summary, find_regressions, format_table  # noqa: F401

ProgressFn = Callable[[float, str, str], None]
RECIPE_KEYS = ("batch_size", "weight_decay", "grad_clip", "loss", "iou_loss_weight", "jitter", "jitter_px",
               "aug_intensity", "aug_flip", "aug_scale", "aug_strength", "member_variants")


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class EvalCase:
    """A case scored before/after: ``role`` is ``corrected`` (training data) or ``held_out``."""

    name: str
    role: str
    image: Path
    labels: Path


@dataclass
class LearningPlan:
    """Everything :func:`learn` needs, all checked (see :func:`plan_learning`)."""

    manifest: Path
    base: EnsembleSpec
    cases: list[CorrectedCase]
    held_out: list[EvalCase]
    out: Path
    name: str
    version: str
    root: str
    steps: int
    lr: float
    seed: int
    temperature: float
    recipe: dict[str, Any] = field(default_factory=dict)
    threads: int = 0
    regression_tolerance: float = 0.005
    command: str = ""

    @property
    def weights_dir(self) -> Path:
        """Where the new member files go: beside the manifest (the shared encoder file is reused)."""
        return self.manifest.resolve().parent

    def member_paths(self) -> list[Path]:
        """The new member files, one per base member."""
        return [self.weights_dir / f"{self.name}_member{m}.safetensors" for m in range(len(self.base.members))]

    def eval_cases(self) -> list[EvalCase]:
        """Corrected cases (truth = corrected labels) then held-out cases."""
        return [EvalCase(c.name, "corrected", c.image, c.labels) for c in self.cases] + list(self.held_out)


def bump_version(version: str) -> str:
    """``0.1.0`` -> ``0.1.1`` (numeric dotted versions, padded to 3 parts); otherwise append ``.1``."""
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        parts += ["0"] * (3 - len(parts))
        parts[-1] = str(int(parts[-1]) + 1)
        return ".".join(parts)
    return f"{version}.1"


def _version_key(v: str) -> tuple:
    return tuple(int(p) for p in v.split(".")) if all(p.isdigit() for p in v.split(".")) else (-1,)


def _root(spec: EnsembleSpec) -> str:
    learning = spec.training.get("learning") if isinstance(spec.training, dict) else None
    root = learning.get("root") if isinstance(learning, dict) else None
    return root if isinstance(root, str) and root else spec.name


def _temperature(spec: EnsembleSpec) -> float:
    t = spec.training.get("temperature", 1.0) if isinstance(spec.training, dict) else 1.0
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 100:
        raise WeightsError(f"ensemble {spec.name!r}: training.temperature {t!r} is not a positive number")
    return float(t)


def _recipe(spec: EnsembleSpec, batch_size: int | None) -> dict[str, Any]:
    """Augmentation/loss settings of the base's own training config (defaults when absent)."""
    cfg = spec.training.get("config") if isinstance(spec.training, dict) else None
    out = {k: cfg[k] for k in RECIPE_KEYS if isinstance(cfg, dict) and k in cfg}
    out.setdefault("member_variants", 3)
    out.setdefault("batch_size", 8)
    if batch_size is not None:
        out["batch_size"] = batch_size
    return out


def _check_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write the {what} here ({exc.strerror or exc}); choose another folder") from None


def new_name(root: str, taken: Sequence[str], now: _dt.datetime | None = None) -> str:
    """``<root>-corrected-YYYYMMDD-HHMM`` (UTC), with ``-2``, ``-3``... when taken."""
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%d-%H%M")
    name, i = f"{root}-corrected-{stamp}", 2
    while name in taken:
        name, i = f"{root}-corrected-{stamp}-{i}", i + 1
    return name


def plan_learning(bundles: Sequence[str | os.PathLike], base_ensemble: str, manifest: str | os.PathLike, *,
                  images: Sequence[str | os.PathLike] = (), held_out: Sequence[tuple[str, str]] = (),
                  out: str | os.PathLike | None = None, steps: int = 60, lr: float | None = None, seed: int = 0,
                  batch_size: int | None = None, name: str | None = None, threads: int = 0,
                  regression_tolerance: float = 0.005, command: str = "") -> LearningPlan:
    """Check every input (nothing is trained or written); raises one-line MuscleSAMError subclasses."""
    from ..label_maps import muscle_label_array
    from ..volumes import check_same_grid, read_volume

    if not bundles:
        raise InputError("--from-bundles needs at least one bundle folder")
    if images and len(images) != len(bundles):
        raise InputError(f"--image: give one image per bundle ({len(bundles)} bundles, {len(images)} images)")
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if lr is not None and not 0 < lr < 1:
        raise InputError(f"--lr must be in (0, 1), got {lr}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    man = load_manifest(manifest)
    base = man.get(base_ensemble)
    if base.join:
        raise InputError(f"ensemble {base.name!r} joins {', '.join(base.join)}: learning from corrections fine-tunes "
                         "one ensemble; choose one of them as the base")
    if base.kind != "decoder":
        raise InputError(f"ensemble {base.name!r} is kind {base.kind}; learning from corrections fine-tunes "
                         "kind decoder ensembles only (shared encoder + member heads)")
    missing = base.missing_files()
    if missing:
        raise WeightsError(f"ensemble {base.name!r}: weights file {missing[0]} is missing (not installed?)")
    temperature = _temperature(base)
    cases = [read_bundle(b, images[i] if images else None) for i, b in enumerate(bundles)]
    seen: dict[str, int] = {}
    for i, c in enumerate(cases):  # unique case names for the report
        if c.name in seen:
            cases[i] = dataclasses.replace(c, name=f"{c.name}_{i}")
        seen[c.name] = i
    held: list[EvalCase] = []
    for img, lab in held_out:
        iv, lv = read_volume(img), read_volume(lab, allow_labels=True)
        check_same_grid(iv, lv, "held-out image", "held-out labels")
        if not (muscle_label_array(lv, "held-out labels") > 0).any():
            raise InputError(f"{lab}: held-out label map has no muscle labels")
        twin = [c for c in cases if c.image_sha256 == sha256_file(img)] if Path(img).is_file() else []
        if twin:
            raise InputError(f"held-out image {img} is the image of bundle {twin[0].bundle}: it would not be held out")
        held.append(EvalCase(Path(img).name.split(".")[0], "held_out", Path(img).resolve(), Path(lab).resolve()))
    root = _root(base)
    name = name or new_name(root, man.names)
    if name in man.names:
        raise InputError(f"manifest {man.path} already has an ensemble {name!r}; choose another --name")
    versions = [e.version for e in man.ensembles if _root(e) == root] + [base.version]
    version = bump_version(max(versions, key=_version_key))
    cfg = base.training.get("config") if isinstance(base.training, dict) else None
    lr = lr if lr is not None else float(cfg.get("member_lr", 1e-4)) if isinstance(cfg, dict) else 1e-4
    plan = LearningPlan(man.path, base, cases, held, Path(out or Path("runs") / name), name, version, root, steps, lr,
                        seed, temperature, _recipe(base, batch_size), threads, regression_tolerance, command)
    taken = [p for p in plan.member_paths() if p.exists()]
    if taken:
        raise InputError(f"{taken[0]} already exists; choose another --name")
    _check_writable(plan.weights_dir, "new member weights")
    check_replaceable(plan.out, "learning")  # never over the user's own files
    _check_writable(plan.out.parent, "learning report")
    return plan


# ----------------------------------------------------------------------------- training


def _train_config(plan: LearningPlan):
    """The validated TrainConfig of the D-mode fine-tuning (geometry and prompts from the base entry)."""
    from ..models.architectures import ARCHITECTURES
    from ..training.config import parse_config

    b = plan.base
    arch: Any = b.arch_name if b.arch_name in ARCHITECTURES and ARCHITECTURES[b.arch_name] == b.arch else b.arch.to_dict()
    data = {"data": {"train": [{"image": str(c.image), "labels": str(c.labels), "name": c.name} for c in plan.cases]},
            "name": plan.name, "arch": arch, "mode": "E+D", "prompt_geometry": b.prompt_geometry,
            "crop_margin": b.crop_margin if b.prompt_geometry == "box_crop" else 0.25,
            "box_mask_prompt": b.box_mask_prompt, "box_mask_logit": b.box_mask_logit,
            "steps": plan.steps, "lr": plan.lr, "member_lr": plan.lr, "member_steps": plan.steps,
            "warmup_steps": min(10, plan.steps // 5), "val_every": plan.steps, "checkpoint_every": plan.steps,
            "patience": 1, "seed": plan.seed, "members": len(b.members), "ensemble_kind": "decoder",
            "temperature": plan.temperature, "threads": plan.threads, "version": plan.version,
            "licence": b.licence, "description": "", **plan.recipe}
    cfg = parse_config(data, f"learning from corrections ({plan.name})")
    return dataclasses.replace(cfg, mode="D")  # E+D above only passes the init check; the heads train in D mode


def _base_states(plan: LearningPlan) -> list[dict]:
    """Full Sam states (shared encoder + member head), checksum-verified, temperature taken out."""
    from ..models.ensemble import spec_states
    from ..training.validate import bake_temperature

    base, members = spec_states(plan.base)
    out = []
    for member in members:
        st = {**base, **member}
        out.append(bake_temperature(st, 1.0 / plan.temperature) if plan.temperature != 1.0 else st)
    return out


def finetune_heads(plan: LearningPlan, work: Path, progress: ProgressFn, span: tuple[float, float]) -> tuple[list[dict], list, Any]:
    """D mode: embed once with the shared encoder, fine-tune each head from its own weights and seed.

    Returns (new member head states with the temperature baked back in, run results, config).
    """
    import torch

    from ..models.safe_load import load_into, load_state_dict
    from ..models.architectures import build_sam
    from ..training.config import CaseSpec
    from ..training.data import load_case, make_samples
    from ..training.trainer import decoder_state, precompute, train_one
    from ..training.validate import bake_temperature

    if plan.threads:
        torch.set_num_threads(plan.threads)
    cfg = _train_config(plan)
    lo, hi = span
    progress(lo, "load", "reading the corrected cases")
    cases = [load_case(CaseSpec(str(c.image), str(c.labels), c.name)) for c in plan.cases]
    samples = make_samples(cases, cfg.labels)
    states = _base_states(plan)
    progress(lo + 0.05 * (hi - lo), "embed", f"embedding {len(samples)} boxes x {cfg.member_variants} renders once")
    enc = build_sam(cfg.arch_spec)
    load_into(enc, states[0], strict=True, what=f"ensemble {plan.base.name}", arch=cfg.arch_spec.name)
    pre = precompute(enc.eval(), cases, samples, cfg, cfg.member_variants, plan.seed)
    del enc
    heads, runs = [], []
    n = len(states)
    for m, st in enumerate(states):
        frac = lo + (0.15 + 0.85 * m / n) * (hi - lo)
        progress(frac, "train", f"fine-tuning member {m + 1}/{n} ({plan.steps} steps)")
        r = train_one(cfg, cases, [], work / f"member_{m}", mode="D", seed=plan.seed + 1 + m, steps=plan.steps,
                      lr=plan.lr, init_state=st, precomputed=pre, progress=False, desc=f"member {m}")
        runs.append(r)
        head = decoder_state(load_state_dict(r.best_path))
        heads.append(bake_temperature(head, plan.temperature) if plan.temperature != 1.0 else head)
    return heads, runs, cfg


# ----------------------------------------------------------------------------- evaluation


def evaluate_pair(plan: LearningPlan, new_spec: EnsembleSpec, progress: ProgressFn,
                  span: tuple[float, float], out: Path | None = None) -> list[dict[str, Any]]:
    """Base and new ensemble on every eval case with label-derived tight boxes (``pipelines.evaluate.evaluate_case``);
    their reports go under ``out / 'eval'`` (default ``plan.out``)."""
    from ..pipelines.evaluate import evaluate_case
    from ..models.device import resolve_device
    from ..models.ensemble import Ensemble
    from ..models.loading import LoadedEnsemble
    from ..volumes import read_volume

    dev = resolve_device(None)
    base = LoadedEnsemble(Ensemble.from_spec(plan.base, device=dev), plan.manifest, sha256_file(plan.manifest))
    new = LoadedEnsemble(Ensemble.from_spec(new_spec, device=dev), plan.manifest, None)
    cases = plan.eval_cases()
    rows, lo, hi, k = [], span[0], span[1], 0
    for c in cases:
        image, labels = read_volume(c.image), read_volume(c.labels, allow_labels=True)
        row: dict[str, Any] = {"case": c.name, "role": c.role, "image": str(c.image), "labels": str(c.labels)}
        for which, loaded in (("base", base), ("new", new)):
            progress(lo + (hi - lo) * k / (2 * len(cases)), "evaluate", f"{c.name} ({c.role}): {which} ensemble")
            rep = evaluate_case(image, labels, loaded, (out or plan.out) / "eval" / c.name / which, show_progress=False,
                                use_growcut=False)
            row[which] = _summary(rep)
            row["baseline_boxfill_dsc"] = rep["baseline_boxfill"]["mean"]["dsc"]
            k += 1
        row["delta"] = {m: _delta(row["new"].get(m), row["base"].get(m)) for m in EVAL_METRICS}
        rows.append(row)
    return rows



# ----------------------------------------------------------------------------- publishing


def publish(plan: LearningPlan, spec: EnsembleSpec) -> str:
    """Append ``spec`` to the manifest through the one manifest writer (re-read under its lock; others'
    entries and ``default`` kept; a name added meanwhile is refused, never overwritten)."""
    return add_entry(plan.manifest, spec)


def _new_spec(plan: LearningPlan, files: list[WeightFile], record: dict) -> EnsembleSpec:
    b = plan.base
    desc = (f"{b.name} fine-tuned on {len(plan.cases)} corrected case(s) "
            f"({', '.join(c.name for c in plan.cases)}); decoder heads only, shared encoder unchanged.")
    return replace_spec(b, name=plan.name, members=tuple(files), version=plan.version, default=False,
                        description=desc, training=record, manifest_path=plan.manifest.resolve())


def _record(plan: LearningPlan, cfg, runs, seconds: float) -> dict[str, Any]:
    import torch

    return {
        "software": f"musclesam {__version__}", "command": plan.command, "kind": "learning from corrections",
        "learning": {
            "root": plan.root, "base_ensemble": plan.base.name, "base_version": plan.base.version,
            "base_manifest_sha256": sha256_file(plan.manifest),
            "base_files_sha256": [f.sha256 for f in plan.base.files],
            "bundles": [c.record() for c in plan.cases],
            "held_out": [{"name": h.name, "image": str(h.image), "labels": str(h.labels)} for h in plan.held_out],
            "mode": "D (decoder heads fine-tuned on precomputed embeddings of the shared encoder)",
            "steps": plan.steps, "lr": plan.lr, "seeds": [plan.seed + 1 + m for m in range(len(plan.base.members))],
            "temperature_handling": "base temperature divided out before fine-tuning and baked back in after; "
                                    "the base's logit offset kept as it is",
        },
        "config": cfg.to_dict(), "temperature": plan.temperature,
        "logit_offset": plan.base.logit_offset,
        **({"propagation_min_iou_pred": plan.base.training["propagation_min_iou_pred"]}
           if "propagation_min_iou_pred" in (plan.base.training or {}) else {}),
        "runs": [{"steps": r.steps_done, "seconds": round(r.seconds, 1),
                  "final_loss": r.history[-1]["loss"] if r.history else None} for r in runs],
        "seconds": round(seconds, 1), "torch": torch.__version__, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def learn(plan: LearningPlan, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Fine-tune, write the member files, evaluate before/after, publish the entry, write the report.

    Returns the report (also written to ``plan.out / 'learning_report.json'``).
    """
    from ..atomic import write_json_atomic
    from ..models.safe_load import save_safetensors_atomic

    progress = progress or (lambda f, s, m: None)
    t0 = time.perf_counter()
    written: list[Path] = []
    published = False
    try:
        with publish_folder(plan.out, "learning") as stage:  # report and evaluations appear complete or not at all
            work = stage / ".learning-work"
            work.mkdir()
            try:
                heads, runs, cfg = finetune_heads(plan, work, progress, (0.02, 0.55))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            progress(0.56, "write", f"writing {len(heads)} member files into {plan.weights_dir}")
            files = []
            for m, (head, path) in enumerate(zip(heads, plan.member_paths())):
                written.append(path)
                sha = save_safetensors_atomic(head, path, {"ensemble": plan.name, "member": str(m), "base": plan.base.name})
                files.append(WeightFile(os.path.relpath(path, plan.weights_dir), path.resolve(), sha))
            record = _record(plan, cfg, runs, time.perf_counter() - t0)
            spec = _new_spec(plan, files, record)
            rows = evaluate_pair(plan, spec, progress, (0.58, 0.97), out=stage)
            regressions = find_regressions(rows, plan.regression_tolerance)
            record["before_after"] = {"cases": [{k: r[k] for k in ("case", "role", "base", "new", "delta")} for r in rows],
                                      "regressions": regressions, "report": str(plan.out / "learning_report.json")}
            record["seconds"] = round(time.perf_counter() - t0, 1)
            spec = replace_spec(spec, training=record)
            progress(0.98, "publish", f"adding {plan.name} to {plan.manifest}")
            manifest_sha = publish(plan, spec)
            published = True
            report = {
                "base": {"name": plan.base.name, "version": plan.base.version},
                "new": {"name": plan.name, "version": plan.version, "members": [str(p) for p in plan.member_paths()]},
                "manifest": str(plan.manifest.resolve()), "manifest_sha256": manifest_sha,
                "bundles": [c.record() for c in plan.cases], "metrics": list(EVAL_METRICS), "cases": rows,
                "regressions": regressions, "regression_tolerance": plan.regression_tolerance,
                "regression_metrics": list(REGRESSION_METRICS), "seconds": record["seconds"],
                "what_the_numbers_mean": ("corrected cases are the new ensemble's training data (truth = the corrected "
                                          "labels), so 'new' there is training-set agreement; held-out cases were not "
                                          "trained on in this run: a drop there is a regression. Prompts: one tight box per "
                                          "muscle per leg per slice from the truth labels (musclesam evaluate's convention)."),
            }
            write_json_atomic(stage / "learning_report.json", report)
        progress(1.0, "done", f"{plan.name}: {len(regressions)} regression(s)")
        return report
    finally:
        if not published and not _in_manifest(plan):  # an interrupt right after publish() must keep the files
            for p in written:
                p.unlink(missing_ok=True)


def _in_manifest(plan: LearningPlan) -> bool:
    """True when the manifest on disk names ``plan``'s new ensemble (it was published)."""
    try:
        return plan.name in {e.name for e in load_manifest(plan.manifest).ensembles}
    except Exception:  # noqa: BLE001 - unreadable manifest: treat as not published
        return False


__all__ = ["CorrectedCase", "EvalCase", "LearningPlan", "bump_version", "bundle_sha256", "evaluate_pair",
           "find_regressions", "finetune_heads", "format_table", "learn", "new_name", "plan_learning", "publish",
           "read_bundle"]
