"""User-facing error types.

Every failure a user can cause (a bad file, a bad box, a bad manifest) raises one of these with a
one-line message naming the input and what to do; the CLI prints it and exits with code 2.
"""

from __future__ import annotations


class MuscleSAMError(Exception):
    """Base class: a clear, user-facing problem (never a programming bug)."""


class InputError(MuscleSAMError):
    """A user-supplied file or value is missing, unreadable or unusable."""


class GeometryError(InputError):
    """Images that must share a grid do not (or a box lies outside the image)."""


class WeightsError(MuscleSAMError):
    """A weights file or manifest is missing, corrupt, tampered with or of the wrong architecture."""


class OutputWriteError(InputError):
    """An output could not be written (read-only folder, full disk, quota); ``errno`` says which, when known."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class InputWarning(UserWarning):
    """Something about an input looks wrong but may be intended (a Dixon pair that looks swapped, qform and
    sform disagreeing): the work goes on and the front end shows the one-line message."""


def warn_input(message: str) -> None:
    """Issue an :class:`InputWarning` (the CLI prints it as ``musclesam CMD: warning: ...``)."""
    import warnings

    warnings.warn(message, InputWarning, stacklevel=3)
