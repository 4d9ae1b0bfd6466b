"""MuscleSAM engine: uncertainty-aware SAM-ensemble segmentation of thigh muscle MRI.

Layers (DESIGN.md; each imports only those below it, checked by Testing/Python/test_layers.py):

1. base modules here, each rule once: ``paths`` (shipped files), ``labels`` (muscle label parser),
   ``errors``, ``volumes`` (image IO, canonical LPS view, the LPS<->RAS conversion), ``intensity`` and
   ``slice_geometry`` (model input), ``uncertainty``, ``biomarkers``, ``atomic`` (all-or-nothing writes);
   ``models`` (architectures, manifest + its locked writer, device policy, loading, the Ensemble);
   ``engine`` (box rule, Segmenter, assembly, propagation, review, session); ``metrics``, ``outputs``
   (file formats), ``baselines``, ``phantoms``, ``training``;
2. ``pipelines`` (headless use cases) and ``corrections`` (learning from corrections);
3. ``scene_bridge`` (MRML, imports Slicer lazily; front ends use only its door, ``MuscleSAMLogic``);
4. front ends: ``cli``, ``web`` and the desktop module ``MuscleSAM/``.

Importable with no Slicer and no Qt.
"""
from __future__ import annotations

from .version import __version__

__all__ = ["__version__"]
