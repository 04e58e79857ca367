"""The input check: slices unlike the training data are flagged, through the predictor and the reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.predictor import BundlePredictor
from scripts.input_check import (
    N_BINS,
    InputLikenessd,
    build_input_reference,
    input_distance,
    intensity_features,
    load_input_reference,
)
from conftest import BUNDLE, SAMPLE_SPLIT

REFERENCE = BUNDLE / "models" / "input_reference.json"


def _greys() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("F"), np.float32) for p in sorted(SAMPLE_SPLIT.glob("*.jpg"))]


def test_features_are_background_share_and_a_normalised_histogram():
    image = np.zeros((1, 10, 10), np.float32)
    image[0, :5] = 0.5
    feats = intensity_features(image)
    assert feats.shape == (N_BINS + 1,) and feats[0] == pytest.approx(0.5)
    assert feats[1:].sum() == pytest.approx(1.0) and np.count_nonzero(feats[1:]) == 1
    assert intensity_features(np.zeros((4, 4)))[1:].sum() == 0.0  # blank: all background, no NaN


def test_reference_from_slices_accepts_them_and_is_written_atomically(tmp_path: Path):
    rng = np.random.default_rng(0)
    slices = [np.clip(rng.normal(0.5, 0.1, (32, 32)), 0, 1) for _ in range(40)]
    path = tmp_path / "ref.json"
    ref = build_input_reference(slices, percentile=100.0, path=path)
    assert load_input_reference(path) == json.loads(path.read_text()) and ref["n_images"] == 40
    assert all(input_distance(intensity_features(s), ref) <= ref["max_distance"] + 1e-9 for s in slices)
    inverted = InputLikenessd(reference=ref)({"image": 1.0 - slices[0] ** 3})
    assert inverted["image_unusual"] and inverted["image_distance"] > ref["max_distance"]
    with pytest.raises(ValueError, match="at least 10 training slices"):
        build_input_reference(slices[:3])


@pytest.mark.parametrize(
    "content, message",
    [("{}", "not an input reference"), ("[1, 2", "not an input reference"),
     (json.dumps({"mean": [0] * 3, "std": [1] * 3, "max_distance": 1}), "expected 17 means")],
)  # fmt: skip
def test_a_broken_reference_is_refused_naming_the_file(tmp_path: Path, content: str, message: str):
    path = tmp_path / "ref.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_input_reference(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="input reference not found"):
        load_input_reference(tmp_path / "missing.json")


def test_shipped_reference_accepts_real_slices_and_flags_inverted_ones():
    predictor = BundlePredictor(BUNDLE, device="cpu")
    greys = _greys()
    real = predictor.predict_arrays(greys, details=True)
    assert sum(p.input_unusual for p in real) <= 1  # about 1% of real slices lie past the 99th percentile
    inverted = predictor.predict_arrays([np.where(g > 20, 255.0 - g, 0.0) for g in greys], details=True)
    assert sum(p.input_unusual for p in inverted) >= 9
    assert all(p.input_distance is not None for p in real + inverted)
    assert REFERENCE.is_file()
