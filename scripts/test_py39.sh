#!/usr/bin/env bash
# The engine and learning tests on the Python stack of Slicer 5.6/5.8 (Python 3.9, numpy 1.26, pydicom 2.4):
# a second cached venv built from requirements/lock-py39.txt (first run only: a few minutes, ~7 GB).
# scripts/test.sh runs this after the main suite; extra pytest arguments are passed on.
MUSCLESAM_LOCK="$(cd "$(dirname "$0")/.." && pwd)/requirements/lock-py39.txt"
export MUSCLESAM_LOCK
source "$(dirname "$0")/env.sh"
unset MUSCLESAM_LOCK
cd "$MUSCLESAM_ROOT"
python -c 'import sys, numpy; assert sys.version_info[:2] == (3, 9) and numpy.__version__.startswith("1.26"), sys.version' || exit 2
# What Slicer runs: volumes and geometry, models and the engine, review, export bundles and DICOM SEG,
# learning from corrections (its CLI job). Left out: tests that need slicer-core, trame or Chromium
# (Python 3.10+ only) and the long training/evaluation runs the main suite already covers.
python -m pytest -p no:cacheprovider \
  Testing/Python/test_python39_compat.py \
  Testing/Python/test_volumes.py Testing/Python/test_intensity_and_slice_geometry.py \
  Testing/Python/test_metrics.py Testing/Python/test_uncertainty.py Testing/Python/test_boxes.py \
  Testing/Python/test_models.py Testing/Python/test_segmenter.py Testing/Python/test_assembly.py \
  Testing/Python/test_propagation.py Testing/Python/test_review.py Testing/Python/test_manifest_writer.py \
  Testing/Python/test_member_masks.py Testing/Python/test_corrections_bundle.py Testing/Python/test_dicom_seg.py \
  Testing/Python/test_learning.py Testing/Python/test_bad_input_user_data.py "$@"
