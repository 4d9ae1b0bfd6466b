"""THE file-name rule: names MuscleSAM builds from user or DICOM text (bundle folders, downloads).

DICOM series and volume names hold ':' '/' '*' and other characters that are invalid in Windows file
names (or path separators anywhere); every front end builds its file and folder names through
:func:`safe_file_name`, so one rule holds on Linux, macOS and Windows.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows reserves whatever the extension (CON.txt is CON too).
_WINDOWS_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)


def safe_file_name(text: str, fallback: str = "image") -> str:
    """``text`` as one file name valid on every OS: letters, digits, '.', '_', '-' only, no '..', no leading or
    trailing dot, not a Windows reserved name, at most 100 characters; ``fallback`` when nothing is left."""
    name = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", text)).strip(".")[:100].rstrip(".")
    if _WINDOWS_RESERVED.fullmatch(name):
        name = "_" + name
    return name or fallback
