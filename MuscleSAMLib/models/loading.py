"""Loading an ensemble from a manifest: the one loader the CLI, the scene bridge, the web app and learning use.

:func:`installed_spec` is every check that needs no weights (the entry exists, its files are there) so
a front end can refuse before starting a background load; :func:`load_spec` then reads the files
(checksums verified, :meth:`Ensemble.from_spec`) on the device chosen by the one device policy. The
manifest is parsed once and its sha256 kept for provenance (:class:`LoadedEnsemble`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WeightsError
from ..paths import DEFAULT_MANIFEST
from .device import resolve_device
from .ensemble import Ensemble
from .manifest import EnsembleSpec, Manifest, load_manifest


@dataclass
class LoadedEnsemble:
    """An ensemble plus where it came from (for provenance)."""

    ensemble: Ensemble
    manifest_path: Path | None
    manifest_sha256: str | None


def read_manifest(manifest: str | os.PathLike[str] | None = None) -> Manifest:
    """``manifest`` (the shipped one when None), validated; every problem is one WeightsError line."""
    return load_manifest(manifest or DEFAULT_MANIFEST)


def missing_files(manifest: Manifest, spec: EnsembleSpec) -> list[Path]:
    """Files an entry needs that are not on disk: its own and those of the entries it joins."""
    return spec.missing_files() + [p for other in spec.join for p in manifest.get(other).missing_files()]


def installed_spec(manifest: Manifest, name: str | None = None) -> EnsembleSpec:
    """Entry ``name`` (the default when None) of ``manifest``; WeightsError naming the files not installed
    (:func:`missing_files`)."""
    spec = manifest.get(name)
    missing = missing_files(manifest, spec)
    if missing:
        raise WeightsError(f"ensemble '{spec.name}' is not installed: missing {', '.join(str(p) for p in missing)}")
    return spec


def load_spec(manifest: Manifest, spec: EnsembleSpec, device: str | torch.device | None = None) -> LoadedEnsemble:
    """Read ``spec``'s weights (checksums verified) onto ``device`` (a name or torch.device; None = auto),
    with the ensembles it joins attached (``Ensemble.joined``)."""
    dev = resolve_device(device)
    ensemble = Ensemble.from_spec(spec, device=dev)
    ensemble.joined = tuple(Ensemble.from_spec(manifest.get(other), device=dev) for other in spec.join)
    return LoadedEnsemble(ensemble, manifest.path, manifest.sha256)


def load_ensemble(name: str | None = None, manifest: str | os.PathLike[str] | None = None,
                  device: str | None = None) -> LoadedEnsemble:
    """Load ensemble ``name`` (default entry when None) from ``manifest`` (the shipped one by default)."""
    m = read_manifest(manifest)
    return load_spec(m, installed_spec(m, name), device)
