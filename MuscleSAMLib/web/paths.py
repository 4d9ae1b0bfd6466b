"""The path rule: which server files a page may name, and safe file names built from page input.

A path typed in the page is a request to read a file on the server, so it is checked before anything
touches it: text with a NUL or other control character, longer than ``MAX_PATH_CHARS``, or with a
``..`` component is refused; a relative path is taken inside the first allowed folder; the path is
resolved with every symlink followed, and the result must lie inside an allowed folder (or be the
image named on the command line). A DICOM folder's entries that are links must stay inside too.
The allowed folders are ``--data-dir`` (repeatable; default: the folder of the IMAGE given on the
command line) and the shipped sample's folder. File names the server builds from page input go
through :func:`safe_file_name`; a download name must be one :func:`is_download_name` accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from ..file_names import safe_file_name  # noqa: F401 - the one file-name rule, re-exported for the web app

MAX_PATH_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOWNLOAD = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.zip")


def shown(text: str, limit: int = 200) -> str:
    """``text`` fit for a message: control characters made visible, long text shortened."""
    out = repr(text)[1:-1] if _CONTROL.search(text) else text
    return out if len(out) <= limit else out[: limit - 3] + "..."


def is_download_name(name: str) -> bool:
    """True for a plain '<name>.zip' (no folder, no leading dot, no control or other odd characters)."""
    return _DOWNLOAD.fullmatch(name) is not None and ".." not in name


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, or an unreadable link
        raise InputError(f"{shown(str(path))} cannot be resolved ({exc}): type the path of an image file") from None


@dataclass(frozen=True)
class PathRule:
    """Folders (and single files) the page may open, all resolved."""

    folders: tuple[Path, ...]
    files: tuple[Path, ...] = ()

    @classmethod
    def build(cls, data_dirs: Iterable[Path], image: Path | None, sample_dir: Path | None) -> "PathRule":
        """``data_dirs`` (default: ``image``'s folder), the sample's folder; ``image`` itself is always allowed."""
        folders = [Path(d).expanduser() for d in data_dirs]
        if not folders and image is not None:
            folders.append(Path(image).expanduser().absolute().parent)
        if sample_dir is not None:
            folders.append(Path(sample_dir))
        files = (_resolve(Path(image).expanduser()),) if image is not None else ()
        return cls(tuple(dict.fromkeys(_resolve(f) for f in folders)), files)

    def describe(self) -> str:
        """The allowed folders, for messages."""
        return ", ".join(map(str, self.folders)) or "none"

    def allows(self, resolved: Path) -> bool:
        """True when the resolved path is an allowed file or lies inside an allowed folder."""
        return resolved in self.files or any(resolved.is_relative_to(f) for f in self.folders)

    def check(self, requested: Any) -> Path:
        """The resolved path of ``requested`` (page text), or :class:`InputError` saying why not and what to do."""
        if not isinstance(requested, str):
            raise InputError(f"the image path arrived as {type(requested).__name__}, not text: type the path again")
        text = requested.strip()
        where = f"the folders this server may open ({self.describe()})"
        if _CONTROL.search(text):
            raise InputError(f"image path '{shown(text)}' contains a NUL or another control character: type the plain "
                             f"path of an image file inside {where}")
        if len(text) > MAX_PATH_CHARS:
            raise InputError(f"image path '{shown(text)}' is {len(text)} characters long (at most {MAX_PATH_CHARS}): "
                             "type the path of an image file")
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # '~someone' who does not exist: taken literally
            path = Path(text)
        if ".." in path.parts:
            raise InputError(f"image path '{shown(text)}' contains '..': type the full path of the image inside {where}")
        if not path.is_absolute():
            if not self.folders:
                raise InputError(f"image path '{shown(text)}' is relative and no folder is allowed: restart "
                                 "`musclesam web` with --data-dir <the image's folder>")
            path = self.folders[0] / path
        resolved = _resolve(path)
        if not self.allows(resolved):
            via = f" (a link to {resolved})" if resolved != path.absolute() else ""
            raise InputError(f"image path '{shown(text)}'{via} is outside {where}: copy the image into one of them, or "
                             "restart `musclesam web` with --data-dir <the image's folder>")
        try:
            is_folder = resolved.is_dir()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise InputError(f"image path '{shown(text)}' cannot be used ({exc.strerror}): type the path of an image "
                             "file") from None
        if is_folder:
            self._check_entries(text, resolved, where)
        return resolved

    def _check_entries(self, text: str, folder: Path, where: str) -> None:
        """A folder (DICOM series) whose entries link outside the allowed folders is refused."""
        try:
            entries = list(folder.iterdir())
        except OSError as exc:
            raise InputError(f"image folder '{shown(text)}' cannot be listed ({exc.strerror}): check its permissions") from None
        for entry in entries:
            if entry.is_symlink() and not self.allows(_resolve(entry)):
                raise InputError(f"image folder '{shown(text)}' holds {entry.name}, a link to {_resolve(entry)} outside "
                                 f"{where}: copy the files instead of linking them")
