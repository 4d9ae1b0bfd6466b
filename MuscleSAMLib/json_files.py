"""Reading the JSON files users hand in or edit (boxes, prompts, reports) with one-line errors.

``json.loads`` fails in more ways than ``JSONDecodeError``: an integer of thousands of digits raises a
plain ``ValueError``, deep nesting a ``RecursionError``; a pipe or a folder given as a file an
``OSError``. Every one of them becomes an :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse ``path`` as JSON; a missing, unreadable or malformed file raises a one-line :class:`InputError`."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a {what}; give the file itself")
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    try:
        text = p.read_bytes().decode("utf-8")  # also reads a pipe (process substitution) once
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not text.strip():
        raise InputError(f"{p}: not a valid {what} (the file is empty)")
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{p}: not a valid {what} (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        reason = str(exc).split(";")[0][:160]
        raise InputError(f"{p}: not a valid {what} ({reason})") from None


def json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """:func:`read_json` for a file that must hold a JSON object."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a valid {what} (expected a JSON object, got {type(data).__name__})")
    return data
