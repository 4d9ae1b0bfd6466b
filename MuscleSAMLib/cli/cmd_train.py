"""``musclesam train``: fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture), or learn
from corrections bundles.

    musclesam train --recipe weights/train_litemedsam.json [--out DIR] [--manifest weights/manifest.json]
    musclesam train --config CFG.json [--out DIR] [--resume] [--members M] [--manifest weights/manifest.json]
    torchrun --nproc_per_node N -m MuscleSAMLib.cli train --config CFG.json ...   (DDP; gloo on CPU)
    musclesam train --from-bundles B1 [B2 ...] --base-ensemble NAME [--manifest M] [--out DIR] [--steps N]
                    [--held-out IMAGE LABELS] [--image IMG ...] [--progress-json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture)",
                       description="Fine-tune a SAM ensemble on (image, labels) volumes with box prompts and write "
                                   "its weights and manifest entry. The config is a JSON file (see "
                                   "MuscleSAMLib/training/config.py); options below override its keys. "
                                   "Runs unchanged under torchrun --nproc_per_node N.")
    p.add_argument("--recipe", default=None,
                   help="LiteMedSAM recipe config JSON (weights/train_litemedsam.json: the shipped default): stored "
                        "embeddings, cross-validated folds, temperature by cross-fitting, final ensemble; resumable; "
                        "with --manifest the final ensemble is added to that manifest as the default")
    p.add_argument("--config", default=None, help="training config JSON (or use --recipe / --from-bundles)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>; with --from-bundles: "
                                               "runs/<new ensemble name>, holding learning_report.json and eval/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoints")
    p.add_argument("--members", type=int, default=None, help="ensemble members M (overrides the config)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    p.add_argument("--seed", type=int, default=None, help="base seed (overrides the config)")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. SAM vit_b .pth)")
    p.add_argument("--manifest", default=None, help="manifest to add the entry to (default: OUT/manifest.json; with "
                                                    "--from-bundles: the shipped weights/manifest.json, which also "
                                                    "holds the base ensemble; new member files go beside it)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("learning from corrections (decoder ensembles: heads fine-tuned in D mode on CPU)")
    g.add_argument("--from-bundles", nargs="+", metavar="DIR", default=None,
                   help="corrections bundles (musclesam export / the module's export) to learn from")
    g.add_argument("--base-ensemble", metavar="NAME", default=None, help="manifest entry to start from (kind decoder)")
    g.add_argument("--image", nargs="+", metavar="IMAGE", default=None,
                   help="the image of each bundle, in order (when it moved from the path in provenance.json)")
    g.add_argument("--held-out", nargs=2, action="append", metavar=("IMAGE", "LABELS"), default=None,
                   help="a labelled case NOT learned from, scored before/after to show a regression (repeatable)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: the base's member_lr, else 1e-4)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size (default: the base's, else 8)")
    g.add_argument("--name", default=None, help="new entry name (default: <base>-corrected-YYYYMMDD-HHMM, UTC)")
    g.add_argument("--regression-tolerance", type=float, default=0.005,
                   help="flag a regression when DSC/NSD drop or ECE rises by more than this (default 0.005)")
    g.add_argument("--progress-json", action="store_true",
                   help="print '@@progress {json}' lines and a final '@@result {json}' line on stdout (for the GUIs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_bundles is not None or args.base_ensemble is not None:
        return run_learning(args)
    if args.recipe is not None:
        return run_recipe_command(args)
    if args.config is None:
        raise InputError("give --config CFG.json (train an ensemble) or --from-bundles DIR... --base-ensemble NAME "
                         "(learn from corrections)")
    for flag in ("image", "held_out", "lr", "batch_size", "name"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')} only applies with --from-bundles")
    from ..training.config import load_config
    from ..training.ensemble import train_ensemble

    if args.members is not None and args.members < 1:
        raise InputError("--members must be >= 1")
    overrides = {"members": args.members, "steps": args.steps, "seed": args.seed, "init": str(Path(args.init).expanduser().resolve()) if args.init else None,
                 "threads": args.threads}
    cfg = load_config(args.config, overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    record = train_ensemble(cfg, out, resume=args.resume, manifest=args.manifest, progress=not args.quiet,
                            command="musclesam " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if record:
        val = record.get("validation", {})
        summary = {"out": str(out), "seconds": record["seconds"], "val_dsc": val.get("dsc"),
                   "ece_box_15": val.get("ece_box_15"), "auroc_error": val.get("auroc_error")}
        print(json.dumps(summary))
    return 0


def run_recipe_command(args: argparse.Namespace) -> int:
    """``--recipe``: the LiteMedSAM recipe end to end (training/litemedsam_recipe.py), then publish."""
    import time

    from ..training.litemedsam_recipe import load_recipe_config, publish, run_recipe

    if args.config is not None:
        raise InputError("give --recipe or --config, not both")
    _, _, extra = load_recipe_config(args.recipe)  # every config problem before any work
    for key in ("default", "int8_deltas"):  # how the trained ensemble is published
        if not isinstance(extra.get(key, False), bool):
            raise InputError(f"{args.recipe}: '{key}' must be true or false, got {extra[key]!r}")
    default = extra.get("default", True)
    out = Path(args.out or Path("runs") / str(extra.get("name", "litemedsam")))
    t0 = time.time()
    say = (lambda m: None) if args.quiet else (lambda m: print(f"[{time.time() - t0:7.0f} s] {m}", file=sys.stderr, flush=True))
    record = run_recipe(args.recipe, out, progress=say)
    if args.manifest:
        publish(out, args.manifest, str(extra.get("name", "litemedsam")), default=default,
                version=str(extra.get("version", "1.0.0")), description=str(extra.get("description", "")),
                licence=str(extra.get("licence", "Apache-2.0")), int8_deltas=extra.get("int8_deltas", False))
        say(f"added {extra.get('name')} to {args.manifest}" + (" as the default ensemble" if default else ""))
    print(json.dumps({"out": str(out), "folds": {k: {"best_val_dsc": v.get("best_val_dsc"),
                                                      "temperature": v.get("temperature_fitted_on_val")}
                                                  for k, v in record.get("folds", {}).items()},
                      "final": record.get("final")}))
    return 0


def _emit(kind: str, payload: dict) -> None:
    print(f"@@{kind} {json.dumps(payload)}", flush=True)


def run_learning(args: argparse.Namespace) -> int:
    """``--from-bundles``: check everything, fine-tune the heads, evaluate before/after, add the entry."""
    import signal

    if not args.from_bundles or not args.base_ensemble:
        raise InputError("learning from corrections needs both --from-bundles DIR... and --base-ensemble NAME")
    for flag in ("config", "members", "init"):
        if getattr(args, flag, None) is not None:
            raise InputError(f"--{flag} does not apply to --from-bundles (the base ensemble fixes it)")
    if args.resume:
        raise InputError("--resume does not apply to --from-bundles (a learning run is short; start it again)")

    def progress(fraction: float, stage: str, message: str) -> None:
        if stage == "publish":  # from here on the job finishes: a cancel must not cut the manifest write
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.progress_json:
            _emit("progress", {"fraction": round(fraction, 4), "stage": stage, "message": message})
        elif not args.quiet:
            print(f"[{fraction * 100:5.1f}%] {stage}: {message}", file=sys.stderr, flush=True)

    def interrupted(signum, frame):  # cancel from the GUIs: unwind so partial files are removed
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, interrupted)
    progress(0.0, "check", "checking the bundles, the base ensemble and the held-out cases")
    from ..corrections.learning import format_table, learn, plan_learning
    from ..paths import DEFAULT_MANIFEST

    plan = plan_learning(args.from_bundles, args.base_ensemble, args.manifest or DEFAULT_MANIFEST,
                         images=args.image or (), held_out=[tuple(h) for h in args.held_out or ()], out=args.out,
                         steps=args.steps if args.steps is not None else 60, lr=args.lr,
                         seed=args.seed if args.seed is not None else 0, batch_size=args.batch_size, name=args.name,
                         threads=args.threads or 0, regression_tolerance=args.regression_tolerance,
                         command="musclesam " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    report = learn(plan, progress)
    print(format_table(report), flush=True)
    result = {"name": report["new"]["name"], "version": report["new"]["version"], "manifest": report["manifest"],
              "report": str(plan.out / "learning_report.json"), "regressions": len(report["regressions"])}
    if args.progress_json:
        _emit("result", result)
    else:
        print(json.dumps(result))
    return 0
