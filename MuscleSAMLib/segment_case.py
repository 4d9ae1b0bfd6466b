"""Moved to :mod:`MuscleSAMLib.pipelines.segment`; only ``DEFAULT_MANIFEST`` is still read from here.

``cli/cmd_train.py`` imports it from this module until its owner imports it from :mod:`MuscleSAMLib.paths`;
then delete this file.
"""

from __future__ import annotations

from .paths import DEFAULT_MANIFEST  # noqa: F401
