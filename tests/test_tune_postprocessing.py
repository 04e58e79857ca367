"""``benchmarks/tune_postprocessing.py``: each variant is the bundle's own first stage, possible tumors included, at
any operating point; the mirror-image average is the mean of the two probabilities."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import BUNDLE, REPO

from scripts.predictor import BundlePredictor

sys.path.insert(0, str(REPO / "benchmarks"))
import tune_postprocessing as tune  # noqa: E402


@pytest.fixture(scope="module")
def predictor() -> BundlePredictor:
    return BundlePredictor(str(BUNDLE), device="cpu")


def _probability() -> np.ndarray:
    """Two blobs: a confident one (0.9) and a faint one (0.4)."""
    prob = np.zeros((64, 64), np.float32)
    prob[5:15, 5:15], prob[40:50, 40:50] = 0.9, 0.4
    return prob


def test_an_operating_point_below_the_possible_floor_brings_the_floor_down(predictor):
    floor = predictor.parser.get_parsed_content("possible_min_confidence")
    for min_confidence, tumors, possible in ((0.0, 1, 0), (0.5, 1, 1), (0.95, 0, 2)):
        transforms = tune.mask_transforms(predictor, 0.3, True, True, min_confidence, 0.0, floor)
        prediction = tune.postprocess(transforms, _probability())
        assert (len(prediction.components), len(prediction.possible_components)) == (tumors, possible)
        assert prediction.possible_mask is not None and prediction.possible_mask.shape == (64, 64)
    none = tune.postprocess(tune.mask_transforms(predictor, 0.3, True, True, 0.5, 0.0, None), _probability())
    assert none.possible_components == [] and not none.possible_mask.any()


def test_the_mirror_average_is_the_mean_of_the_slice_and_its_mirror_image():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(1, 1, 8, 8)
    averaged = torch.softmax(tune.MirrorAverage(network)(x), dim=1)
    expected = (torch.softmax(network(x), 1) + torch.softmax(network(x.flip(-1)), 1).flip(-1)) / 2
    assert torch.allclose(averaged, expected, atol=1e-6)
