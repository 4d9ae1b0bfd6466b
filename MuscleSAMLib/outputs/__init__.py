"""File formats a run or an export leaves on disk (formats only, no orchestration).

Slicer .seg.nrrd, DICOM SEG, member masks, overlays and figures, biomarker tables, and the corrections
bundle (``bundle``: write and check; ``corrected_cases``: read back for learning).
"""

from __future__ import annotations
