"""One inference path: training validation scores the same probabilities the engine's Segmenter predicts.

Validation (``training.validate``) runs each member as a complete segment-anything model; the engine
runs the manifest's ``Ensemble`` (shared encoder, M decoders). For the same weights, volume and boxes
they must give the same per-member probabilities, or validation figures would not describe what users get.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musclesam_test_helpers import write_random_decoder_ensemble
from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.segmenter import Segmenter
from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.loading import load_ensemble
from MuscleSAMLib.models.safe_load import load_state_dict
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.training.data import case_from_arrays
from MuscleSAMLib.training.validate import predict_boxes


@pytest.mark.parametrize("box_mask_prompt", [False, True])
def test_validation_and_segmenter_give_the_same_member_probabilities(tmp_path, box_mask_prompt):
    manifest = write_random_decoder_ensemble(tmp_path / "w", members=2, seed=3, box_mask_prompt=box_mask_prompt)
    loaded = load_ensemble(None, manifest, "cpu")
    spec = loaded.ensemble.spec
    encoder = load_state_dict(spec.base.path, spec.base.sha256)
    sams = []
    for member in spec.members:  # each member as a whole SAM: the shared encoder + its own prompt encoder/decoder
        sam = build_sam(spec.arch)
        sam.load_state_dict({**encoder, **load_state_dict(member.path, member.sha256)})
        sams.append(sam.eval())
    phantom = make_thigh_phantom(shape=(3, 96, 128), seed=1)
    image, labels = phantom.water.astype(np.float32), phantom.labels.astype(np.uint8)
    boxes = boxes_from_labels(labels, values=[3, 7], slices=[1])
    assert boxes

    case = case_from_arrays("phantom", image, labels)
    validated = predict_boxes(sams, case, boxes, spec.prompt_geometry, spec.crop_margin, spec.box_mask_prompt,
                              spec.box_mask_logit)
    with torch.no_grad():
        engine = Segmenter(loaded.ensemble, image, "phantom").predict_slice(1, boxes)
    assert not engine.rejected and len(engine.boxes) == len(validated) == len(boxes)
    for (window, probs), bp in zip(validated, engine.boxes):
        r0, r1, c0, c1 = window  # validation keeps its whole window; the engine keeps a window around the box
        w = bp.window
        assert r0 <= w.r0 and w.r1 <= r1 and c0 <= w.c0 and w.c1 <= c1
        assert bp.member_probs.std() > 1e-3 and np.abs(np.diff(bp.member_probs, axis=0)).max() > 1e-3  # not a constant
        np.testing.assert_allclose(probs[:, w.r0 - r0:w.r1 - r0, w.c0 - c0:w.c1 - c0], bp.member_probs, atol=2e-4)
