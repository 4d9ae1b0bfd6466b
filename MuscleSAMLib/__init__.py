"""MuscleSAM engine: uncertainty-aware SAM-ensemble segmentation of thigh muscle MRI.

Importable with no Slicer and no Qt (see DESIGN.md layers). Submodules:
``volumes`` (image IO and geometry), ``intensity`` (MRI normalisation), ``slice_geometry``
(model-input resize/pad and its inverse), ``phantoms`` (synthetic thighs), ``metrics``.
"""

from __future__ import annotations

from .version import __version__

__all__ = ["__version__"]
