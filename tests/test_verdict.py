"""The three-level verdict (tumor, possible tumor, nothing found) and the volume rule that decides with neighbouring slices."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scripts.verdict import (
    NO_TUMOR,
    POSSIBLE_TUMOR,
    POSSIBLE_TUMOR_LABEL,
    TUMOR,
    TUMOR_LABEL,
    NeighbourSupport,
    label_map,
    png_mask,
    verdict_of,
    volume_verdict,
)
from conftest import BUNDLE, SAMPLE_SPLIT


def _report(index: int, confidence: float | None) -> dict:
    comps = [] if confidence is None else [{"bbox": [0, 0, 1, 1], "area": 1, "confidence": confidence}]
    return {"index": index, "verdict": TUMOR if comps else NO_TUMOR, "tumor_found": bool(comps),
            "components": comps, "possible_components": []}  # fmt: skip


def test_verdicts_labels_and_png_values():
    assert verdict_of([{"area": 1}]) == TUMOR
    assert verdict_of([], [{"area": 1}]) == POSSIBLE_TUMOR
    assert verdict_of([], []) == NO_TUMOR
    assert volume_verdict([NO_TUMOR, POSSIBLE_TUMOR, NO_TUMOR]) == POSSIBLE_TUMOR
    assert volume_verdict([POSSIBLE_TUMOR, TUMOR]) == TUMOR and volume_verdict([]) == NO_TUMOR
    tumor = np.array([[1, 1, 0], [0, 0, 0]])
    possible = np.array([[0, 1, 1], [0, 0, 1]])
    labels = label_map(tumor, possible)
    assert labels.tolist() == [[1, 1, 2], [0, 0, 2]]  # the tumor wins where both are set
    assert png_mask(labels).tolist() == [[255, 255, 128], [0, 0, 128]]
    with pytest.raises(ValueError, match="does not fit"):
        label_map(tumor, possible[:, :2])


def test_an_isolated_tumor_becomes_possible_a_supported_one_stays():
    labels = np.zeros((5, 8, 8), np.uint8)
    labels[1, 2:5, 2:5] = TUMOR_LABEL  # slices 1 and 2 overlap: each supports the other
    labels[2, 3:6, 3:6] = TUMOR_LABEL
    labels[4, 0:2, 0:2] = TUMOR_LABEL  # alone: slice 3 is empty
    reports = [_report(k, 0.9 if labels[k].any() else None) for k in range(5)]
    NeighbourSupport(min_support=0.1, standalone_confidence=1.0).apply(labels, reports)
    assert (labels[4][:2, :2] == POSSIBLE_TUMOR_LABEL).all() and (labels[1:3] != POSSIBLE_TUMOR_LABEL).all()
    assert [r["verdict"] for r in reports] == [NO_TUMOR, TUMOR, TUMOR, NO_TUMOR, POSSIBLE_TUMOR]
    assert reports[4]["components"] == [] and reports[4]["possible_components"][0]["confidence"] == 0.9
    assert reports[4]["support"] == 0.0 and reports[1]["support"] == pytest.approx(4 / 9, abs=1e-4)


def test_support_is_a_fraction_of_the_tumor_and_a_possible_neighbour_counts():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, 0:10, 0:10] = TUMOR_LABEL  # 100 px
    labels[1, 0:2, 0:5] = POSSIBLE_TUMOR_LABEL  # under 10 of them
    rule = NeighbourSupport(min_support=0.2)
    assert rule.support(labels, 0) == pytest.approx(0.10)
    reports = [_report(0, 0.95), _report(1, None)]
    rule.apply(labels, reports)
    assert reports[0]["verdict"] == POSSIBLE_TUMOR  # 10% < 20%
    labels[0] = TUMOR_LABEL
    reports = [_report(0, 0.95), _report(1, None)]
    NeighbourSupport(min_support=0.1).apply(labels, reports)
    assert reports[0]["verdict"] == TUMOR  # 10% >= 10%


def test_a_very_confident_tumor_stands_alone_and_demotion_does_not_cascade():
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, :2, :2] = TUMOR_LABEL
    labels[1, :2, :2] = TUMOR_LABEL
    reports = [_report(0, 0.6), _report(1, 0.97), _report(2, None)]
    NeighbourSupport(min_support=0.5, standalone_confidence=0.95).apply(labels, reports)
    assert [r["verdict"] for r in reports] == [TUMOR, TUMOR, NO_TUMOR]
    alone = np.zeros((3, 4, 4), np.uint8)
    alone[1, :2, :2] = TUMOR_LABEL
    reports = [_report(0, None), _report(1, 0.97), _report(2, None)]
    NeighbourSupport(min_support=0.5, standalone_confidence=0.95).apply(alone, reports)
    assert reports[1]["verdict"] == TUMOR  # 0.97 >= 0.95: no support needed


def test_one_slice_is_left_alone_and_slices_along_another_axis():
    one = np.zeros((1, 4, 4), np.uint8)
    one[0, 1, 1] = TUMOR_LABEL
    reports = [_report(0, 0.6)]
    NeighbourSupport().apply(one, reports)
    assert reports[0]["verdict"] == TUMOR and one[0, 1, 1] == TUMOR_LABEL
    labels = np.zeros((4, 4, 3), np.uint8)  # sliced along the last numpy axis (I)
    labels[:, :, 2][1, 1] = TUMOR_LABEL
    reports = [_report(k, 0.8 if k == 2 else None) for k in range(3)]
    NeighbourSupport().apply(labels, reports, np_axis=2)
    assert reports[2]["verdict"] == POSSIBLE_TUMOR and labels[1, 1, 2] == POSSIBLE_TUMOR_LABEL


@pytest.mark.parametrize("kwargs", [{"min_support": 0.0}, {"min_support": 1.5}, {"standalone_confidence": -0.1}])
def test_volume_rule_arguments_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError, match="min_support|standalone_confidence"):
        NeighbourSupport(**kwargs)


def test_the_shipped_bundle_decides_a_volume_with_its_neighbours():
    """A tumor slice between blank slices has no support: the bundle's volume rule shows it as a possible tumor,
    while the same slice repeated (a tumor across three slices) stays a tumor."""
    from scripts.predictor import BundlePredictor
    from scripts.volumes import predict_volume

    predictor = BundlePredictor(BUNDLE, device="cpu", overrides={"volume_standalone_confidence": 1.0})
    assert isinstance(predictor.volume_rule, NeighbourSupport)
    slices = [np.asarray(Image.open(p).convert("L"), np.float32) for p in sorted(SAMPLE_SPLIT.glob("*.jpg"))]
    tumor_slice = next(s for s in slices if predictor.predict_array(s, details=True).tumor_found)
    blank = np.zeros_like(tumor_slice)
    reports: list = []
    labels, _ = predict_volume(np.stack([blank, tumor_slice, blank]), predictor, slice_reports=reports)
    assert reports[1]["verdict"] == POSSIBLE_TUMOR and reports[1].get("unsupported")
    assert not (labels == TUMOR_LABEL).any() and (labels[1] == POSSIBLE_TUMOR_LABEL).any()
    reports = []
    labels, _ = predict_volume(np.stack([tumor_slice] * 3), predictor, slice_reports=reports)
    assert [r["verdict"] for r in reports] == [TUMOR] * 3 and (labels == TUMOR_LABEL).any(axis=(1, 2)).all()
