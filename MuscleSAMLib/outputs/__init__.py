"""Writers of what a run leaves on disk: label maps, Slicer .seg.nrrd, float maps, reports, overlays."""

from __future__ import annotations
