"""THE device policy: which torch device a requested name means (the one rule every loader and front end uses).

``None`` or ``"auto"``: CUDA when present, else the CPU (DESIGN.md). ``"cpu"``, ``"cuda"`` or ``"cuda:i"``:
that device, and a clear :class:`~MuscleSAMLib.errors.InputError` when it is not there. A GPU the user
asked for is never swapped for the CPU behind their back (a run 50x slower with a warning scrolled away
is worse than one line saying what to choose instead); front ends show a CPU warning for ``auto``.
"""

from __future__ import annotations

import torch

from ..errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # what the CLI and web options offer


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """The torch device for ``requested`` (see the module docstring); InputError when it cannot be had."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {str(requested)!r} is not a device; use one of {', '.join(DEVICE_CHOICES)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(requested)!r}: no CUDA GPU is available here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(requested)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                             "use cuda:0 or auto")
    elif dev.type != "cpu":
        raise InputError(f"device {str(requested)!r} is not supported; use one of {', '.join(DEVICE_CHOICES)}")
    return dev
