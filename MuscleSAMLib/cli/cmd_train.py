"""``musclesam train``: fine-tune an ensemble (SAM/MedSAM checkpoint or demo architecture).

    musclesam train --config CFG.json [--out DIR] [--resume] [--members M] [--manifest weights/manifest.json]
    torchrun --nproc_per_node N -m MuscleSAMLib.cli train --config CFG.json ...   (DDP; gloo on CPU)
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
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoints")
    p.add_argument("--members", type=int, default=None, help="ensemble members M (overrides the config)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    p.add_argument("--seed", type=int, default=None, help="base seed (overrides the config)")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. SAM vit_b .pth)")
    p.add_argument("--manifest", default=None, help="manifest to add the entry to (default: OUT/manifest.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
