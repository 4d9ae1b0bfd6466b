"""sha256 of files, streamed in constant memory (weights, manifests, images, bundles)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes; OSError propagates (callers word the error for their file kind)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
