"""``musclesam web``: serve the MuscleSAM web app (trame-slicer) on localhost."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web", help="serve the MuscleSAM web app (trame-slicer) on localhost",
        description="Serve MuscleSAM in the browser: axial and coronal views, box prompts by mouse drag, Segment / "
                    "Propagate / Cancel, uncertainty heatmap, review queue, paint/erase corrections, export. Opens the "
                    "embedded sample when IMAGE is not given. Binds to 127.0.0.1; another --host needs --token.")
    p.add_argument("image", metavar="IMAGE", nargs="?", type=Path,
                   help="MRI to open (NIfTI, NRRD, MHA or a DICOM folder; default: the embedded sample)")
    p.add_argument("--data-dir", metavar="DIR", type=Path, action="append", default=[],
                   help="folder the page may open images from (repeat for several; default: the folder of IMAGE). "
                        "The shipped sample is always allowed; any other path typed in the page is refused")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--token", help="access token every browser must present (required with a non-loopback --host)")
    p.add_argument("--manifest", type=Path, help="weights manifest (default: the shipped weights/manifest.json)")
    p.add_argument("--ensemble", help="ensemble name in the manifest (default: the manifest's default)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device (default: CUDA if present)")
    p.add_argument("--output", type=Path, help="folder for exported bundles (default: a new temporary folder)")
    p.add_argument("--test-api", action="store_true", help=argparse.SUPPRESS)  # browser tests only
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..web.options import WebOptions  # light; the app itself is imported only after the checks
    from ..web.security import check_bind

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: use 0-65535")
    check_bind(args.host, args.token)
    for folder in args.data_dir:
        if not folder.is_dir():
            raise InputError(f"--data-dir {folder}: no such folder; give an existing folder that holds the images to open")
    options = WebOptions(image=args.image, data_dirs=tuple(args.data_dir), host=args.host, port=args.port,
                         token=args.token, manifest=args.manifest, ensemble=args.ensemble,
                         device=None if args.device == "auto" else args.device, output=args.output, test_api=args.test_api)
    if importlib.util.find_spec("trame_slicer") is None:
        raise InputError("the web app needs the 'web' extra (trame-slicer): pip install 'musclesam[web]'")
    if args.image is not None and not args.image.exists():
        print(f"musclesam web: warning: {args.image}: file not found; the page will say so and offer the sample",
              file=sys.stderr)
    from ..web.app import serve

    return serve(options)
