"""Safe weight files: checksum first, never unpickle arbitrary objects, always map to CPU.

SAM's own loader calls ``torch.load`` without ``map_location`` or ``weights_only`` (breaks CPU-only
machines, and unpickling a file is running its code). Here a file is hashed and compared with the
manifest's sha256 BEFORE it is deserialised; ``.safetensors`` files go through safetensors, PyTorch
pickles through ``torch.load(weights_only=True)``, which refuses any object that is not a tensor or a
plain container. Every failure is a one-line :class:`WeightsError`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import WeightsError
from ..hashing import sha256_of_file

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a weights file's bytes (streamed); an unreadable file is a WeightsError."""
    try:
        return sha256_of_file(path)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None


def _is_safetensors(path: Path) -> bool:
    """By extension; unknown extensions are sniffed (safetensors = 8-byte header length then '{')."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return True
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return False
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a flat {name: tensor} dict, or one wrapped as {"model": ...} / {"state_dict": ...}."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file {path} holds entries that are not tensors: {bad[:5]}")
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_state_dict(path: str | os.PathLike[str], expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict onto the CPU, after verifying ``expected_sha256`` when given.

    ``.safetensors`` via safetensors; ``.pth``/``.pt`` via ``torch.load(map_location="cpu",
    weights_only=True)``. A missing, corrupt, tampered-with or code-carrying file raises WeightsError.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file {p} not found")
    if expected_sha256 is not None:
        actual = sha256_file(p)
        if actual.lower() != expected_sha256.strip().lower():
            raise WeightsError(f"weights file {p} has sha256 {actual}, expected {expected_sha256}; refusing to load it "
                               "(corrupt, replaced or the manifest is out of date)")
    try:
        if _is_safetensors(p):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return _unwrap(load_file(str(p), device="cpu"), p)
            except (SafetensorError, ValueError, OSError, RuntimeError, TypeError, KeyError) as exc:
                raise WeightsError(f"weights file {p} is not a valid safetensors file: {_one_line(exc)}") from None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            if "Unsupported global" in msg or "Unsupported class" in msg or "not an allowed global" in msg:
                raise WeightsError(f"weights file {p} contains Python objects other than tensors; refused "
                                   "(loading it would run code). Convert it to .safetensors") from None
            raise WeightsError(f"weights file {p} is corrupt or not a PyTorch weights file (unpickling refused)") from None
        except Exception as exc:  # noqa: BLE001 - a malformed file can fail anywhere inside the unpickler
            raise WeightsError(f"weights file {p} is corrupt or not a PyTorch file: {_one_line(exc)}") from None
        return _unwrap(obj, p)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {p}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """First line of an exception message, shortened (library messages can be pages long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _listing(items: Iterable[str], limit: int = 10) -> str:
    """Up to ``limit`` items, then '(+k more)'."""
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True, what: str = "",
              arch: str = "", assign: bool = False) -> tuple[list[str], list[str]]:
    """Copy ``state`` into ``model``; a mismatch raises WeightsError naming the keys (never silent).

    With ``strict=False`` missing and unexpected keys are allowed (and returned), shape mismatches never
    are. ``assign=True`` adopts the tensors instead of copying (fills a model built on the meta device
    without first allocating random weights). Returns (missing, unexpected).
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                    for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing and strict:
            parts.append(f"missing {len(missing)} keys: {_listing(missing)}")
        if unexpected and strict:
            parts.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (checkpoint vs model): {_listing(shapes)}")
        raise WeightsError(f"checkpoint {what or '(in memory)'} does not match architecture "
                           f"{arch or type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False, assign=assign)
    return missing, unexpected


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and values (torch.equal alone ignores the dtype)."""
    return a.dtype == b.dtype and torch.equal(a, b)


def save_safetensors_atomic(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                            metadata: Mapping[str, str] | None = None, keep_identical: bool = False) -> str:
    """Write ``state`` as safetensors via a temporary file and ``os.replace``; returns the file's sha256.

    A crash mid-write leaves the previous file (if any) intact. Tensors are copied to contiguous CPU
    memory first (safetensors refuses shared or strided storage). ``keep_identical``: when ``path``
    already holds exactly these tensors and metadata, leave it as it is (safetensors does not write its
    header in a fixed order, so a rewrite of the same weights would change the bytes: a new blob in git).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if keep_identical and p.is_file():
        try:
            with safe_open(str(p), framework="pt") as f:
                same = (f.metadata() or {}) == dict(metadata or {}) and set(f.keys()) == set(tensors) and all(
                    _same_tensor(f.get_tensor(k), v) for k, v in tensors.items())
        except Exception:  # unreadable: write it anew
            same = False
        if same:
            return sha256_file(p)
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
        digest = sha256_file(tmp)
    return digest
