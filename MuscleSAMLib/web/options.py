"""What ``musclesam web`` was asked to do (parsed once, passed to every part of the app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WebOptions:
    """Command-line choices of the web app."""

    image: Path | None = None  # None: the embedded sample case
    data_dirs: tuple[Path, ...] = ()  # folders the page may open images from (none: IMAGE's folder); see paths.py
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    manifest: Path | None = None  # None: the shipped weights/manifest.json
    ensemble: str | None = None  # None: the manifest's default entry
    device: str | None = None  # None: CUDA when present, else CPU
    output: Path | None = None  # where export bundles are written (None: a fresh temporary folder)
    test_api: bool = False  # expose /musclesam/test/* (browser tests only)
