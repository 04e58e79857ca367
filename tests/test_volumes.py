"""The one slice loop (``bundle/scripts/volumes.py``) with a stand-in predictor whose every answer is known.

The stand-in marks a tumor where a voxel is at least 100, a possible tumor where it is 50 to 99, and
gives each slice the score ``max / 255`` (above 0 on a slice with anything in it, found or not), so
every mask, report and sentence below is worked out by hand from the voxels.
"""

from __future__ import annotations

import csv
import logging
import threading

import numpy as np
import pytest

from conftest import write_volume
from scripts.predictor import TumorPrediction
from scripts.verdict import NO_TUMOR, POSSIBLE_TUMOR, TUMOR, NeighbourSupport
from scripts.volumes import (
    SegmentationCancelled,
    VolumeSegmentation,
    axial_slicing,
    is_cancelled,
    predict_volume,
    resolve_axis,
    segment_medical_file,
    slicing,
)

#: Direction matrices (LPS, one column per IJK axis) of the ways a head is stored. A sagittal DICOM series:
#: I front to back, J head to foot, K right to left; a coronal one: I right to left, J head to foot, K front to back.
AXIAL = np.eye(3)
SAGITTAL = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
CORONAL = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]


def _tilted(degrees: float) -> np.ndarray:
    """An axial volume tilted about the left-right axis (its J and K columns turned towards each other)."""
    t = np.radians(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])


def _components(mask: np.ndarray, confidence: float) -> list[dict]:
    if not mask.any():
        return []
    rows, cols = np.nonzero(mask)
    box = [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)]
    return [{"bbox": box, "area": int(mask.sum()), "confidence": confidence}]


class StandIn:
    """A predictor with ``predict_arrays`` (and ``details=True``) that records what it was given."""

    def __init__(self, on_call=None) -> None:
        self.calls: list[list[tuple[int, ...]]] = []
        self.on_call = on_call

    def predict_arrays(self, images, with_probability=False, batch_size=8, details=False):
        self.calls.append([np.shape(im) for im in images])
        if self.on_call is not None:
            self.on_call(len(self.calls))
        out = []
        for image in images:
            image = np.asarray(image, np.float32)
            grey = image.mean(axis=-1) if image.ndim == 3 else image
            tumor, possible = grey >= 100, (grey >= 50) & (grey < 100)
            prob = (grey / 1000).astype(np.float32)
            if details:
                score = round(float(grey.max()) / 255, 4)
                out.append(
                    TumorPrediction(
                        tumor.astype(np.uint8),
                        prob,
                        score,
                        _components(tumor, score),
                        input_unusual=bool(grey.max() == 7),
                        input_distance=float(grey.max()),
                        possible_mask=possible.astype(np.uint8),
                        possible_components=_components(possible, score),
                    )
                )
            else:
                mask = tumor.astype(np.uint8) * 255  # any non-zero value is tumor
                out.append((mask, prob) if with_probability else mask)
        return out


# --------------------------------------------------------------------------- the slice loop


@pytest.mark.parametrize("axis, slice_shape, n", [(2, (4, 5), 3), (1, (3, 5), 4), (0, (3, 4), 5)])
def test_each_slice_mask_lands_where_its_slice_was(axis, slice_shape, n):
    volume = np.zeros((3, 4, 5), np.float32)  # (k, j, i)
    volume[1, 2, 3] = 150.0  # a tumor voxel
    volume[2, 0, 4] = 60.0  # below the tumor level: no mask, some probability
    stand_in = StandIn()
    mask, prob = predict_volume(volume, stand_in, axis=axis, batch_size=2, with_probability=True)
    expected = np.zeros((3, 4, 5), np.uint8)
    expected[1, 2, 3] = 1
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
    assert prob.dtype == np.float32 and np.array_equal(prob, volume / 1000)
    sizes = [len(call) for call in stand_in.calls]
    assert sizes == [2] * (n // 2) + [1] * (n % 2) and {s for call in stand_in.calls for s in call} == {slice_shape}


def test_vector_and_single_channel_volumes():
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    rgb[1, 0, 0] = (200, 200, 200)
    mask, prob = predict_volume(rgb, StandIn())
    assert prob is None and mask.shape == (2, 3, 4) and np.argwhere(mask).tolist() == [[1, 0, 0]]
    rgba = np.concatenate([rgb, np.full((2, 3, 4, 1), 200, np.uint8)], axis=-1)  # opaque: grey 200 where rgb is
    assert np.argwhere(predict_volume(rgba, StandIn())[0]).tolist() == [[1, 0, 0]]
    flat_i = np.zeros((3, 4, 1), np.float32)  # a scalar volume one voxel thin along I, not a one-channel image
    flat_i[2, 1, 0] = 180
    stand_in = StandIn()
    assert np.argwhere(predict_volume(flat_i, stand_in)[0]).tolist() == [[2, 1, 0]]
    assert stand_in.calls == [[(3, 4)]], "one slice along I"
    one_channel = np.zeros((2, 3, 4, 1), np.float32)
    one_channel[0, 2, 3, 0] = 101
    assert np.argwhere(predict_volume(one_channel, StandIn())[0]).tolist() == [[0, 2, 3]]


def test_slices_go_to_the_predictor_eight_at_a_time_by_default(tmp_path):
    stand_in = StandIn()
    predict_volume(np.zeros((9, 4, 4)), stand_in)
    assert [len(call) for call in stand_in.calls] == [8, 1]
    write_volume(tmp_path / "nine.nrrd", np.zeros((9, 4, 4)), [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], np.eye(3))
    for segment in (
        lambda p: segment_medical_file(p, tmp_path / "nine.nrrd", tmp_path / "a.nrrd"),
        lambda p: VolumeSegmentation(p, [tmp_path / "nine.nrrd"], tmp_path / "b").run(),
    ):
        stand_in = StandIn()
        segment(stand_in)
        assert [len(call) for call in stand_in.calls] == [8, 1]


def test_vector_volumes_get_a_scalar_probability_and_label_map():
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    rgb[1, 0, 0] = (200, 200, 200)
    rgb[0, 2, 3] = (70, 70, 70)
    for reports in (None, []):
        mask, prob = predict_volume(rgb, StandIn(), with_probability=True, slice_reports=reports)
        assert mask.shape == prob.shape == (2, 3, 4) and prob[1, 0, 0] == pytest.approx(0.2)
        assert np.argwhere(mask == 1).tolist() == [[1, 0, 0]]
        assert np.argwhere(mask == 2).tolist() == ([[0, 2, 3]] if reports is not None else [])


def test_progress_is_reported_after_each_batch():
    seen: list[float] = []
    predict_volume(np.zeros((5, 4, 4)), StandIn(), batch_size=2, progress=seen.append)
    assert seen == [0.0, 0.4, 0.8, 1.0]


@pytest.mark.parametrize("style", ["event", "callable"])
def test_cancel_is_checked_before_every_batch_not_only_after_the_last(style):
    event = threading.Event()
    stand_in = StandIn(on_call=lambda calls: event.set())  # the user presses Cancel during the first batch
    seen: list[float] = []
    with pytest.raises(SegmentationCancelled, match="nothing was changed"):
        predict_volume(
            np.zeros((5, 4, 4)), stand_in, batch_size=2, progress=seen.append,
            cancel=event if style == "event" else event.is_set,
        )  # fmt: skip
    assert len(stand_in.calls) == 1, "the second batch must not run once cancel fired"
    assert seen == [0.0, 0.4]


def test_cancel_before_the_start_runs_nothing_and_a_cancel_after_the_last_batch_still_counts():
    stand_in = StandIn()
    with pytest.raises(SegmentationCancelled):
        predict_volume(np.zeros((2, 4, 4)), stand_in, cancel=lambda: True)
    assert stand_in.calls == []
    event = threading.Event()
    last = StandIn(on_call=lambda calls: event.set())
    with pytest.raises(SegmentationCancelled):  # one batch only: cancelled while it ran
        predict_volume(np.zeros((2, 4, 4)), last, batch_size=8, cancel=event)
    assert len(last.calls) == 1


def test_is_cancelled_reads_events_and_callables():
    event = threading.Event()
    assert is_cancelled(None) is False and is_cancelled(event) is False and is_cancelled(lambda: 0) is False
    event.set()
    assert is_cancelled(event) is True and is_cancelled(lambda: 1) is True
    with pytest.raises(TypeError, match="cancel must be a callable or a threading.Event, got int"):
        is_cancelled(3)


def test_resolve_axis_picks_the_flat_axis_and_reads_names():
    assert resolve_axis((1, 20, 30)) == 2 and resolve_axis((20, 1, 30)) == 1 and resolve_axis((20, 30, 1)) == 0
    assert resolve_axis((1, 1, 30)) == 2, "K first when several axes are flat"
    assert resolve_axis((20, 1, 1)) == 1
    assert resolve_axis((5, 20, 30)) == 2 and resolve_axis((5, 20, 30, 3)) == 2
    assert resolve_axis((5, 20, 30), "i") == 0 and resolve_axis((5, 20, 30), "J") == 1
    assert resolve_axis((5, 20, 30), np.int64(1)) == 1 and resolve_axis((1, 20, 30), 0) == 0
    for bad in ("x", 3, -1, True, 1.0):
        with pytest.raises(ValueError, match="axis must be"):
            resolve_axis((5, 20, 30), bad)


def test_axial_slicing_cuts_along_the_axis_nearest_foot_to_head_with_rows_front_to_back():
    assert axial_slicing(AXIAL) == (2, False)
    assert axial_slicing(np.diag([-1.0, -1.0, 1.0])) == (2, False), "NIfTI's RAS identity as ITK reads it"
    assert axial_slicing(np.diag([1.0, 1.0, -1.0])) == (2, False), "slices stored head to foot"
    assert axial_slicing(SAGITTAL) == (1, True), "J is foot to head; the (K, I) plane's rows are right to left"
    assert axial_slicing(CORONAL) == (1, False), "the (K, I) plane's rows are front to back already"
    assert axial_slicing([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) == (2, True), "rows right to left"
    assert axial_slicing(np.diag([0.5, 0.6, 4.0])) == (2, False), "spacing in the columns does not matter"
    assert axial_slicing(_tilted(30)) == (2, False) and axial_slicing(_tilted(-30)) == (2, False)
    assert axial_slicing(_tilted(60)) == (1, False), "tilted past 45 degrees: J is the nearer axis"
    assert axial_slicing(_tilted(45)) == (2, False), "a tie keeps K"
    assert axial_slicing(np.array(SAGITTAL) @ _tilted(10)) == (1, True), "an oblique sagittal volume"
    for bad, said in (
        (np.eye(2), "3x3"),
        ([[1.0, 0.0, 0.0], [0.0, np.nan, 0.0], [0.0, 0.0, 1.0]], "finite"),
        ([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "the IJK axis J has no direction"),
        ("identity", "3x3 matrix of numbers"),
        (None, "3x3"),
    ):
        with pytest.raises(ValueError, match=f"direction: .*{said}"):
            axial_slicing(bad)


def test_slicing_reads_the_direction_only_for_a_volume_cut_automatically():
    assert slicing((5, 20, 30), None, SAGITTAL) == (1, True) and resolve_axis((5, 20, 30), None, SAGITTAL) == 1
    assert slicing((5, 20, 30), None, None) == (2, False), "no direction: K, as before"
    assert slicing((1, 20, 30), None, SAGITTAL) == (2, False), "a single slice is one 2D image, whichever way"
    assert slicing((20, 1, 30), None, AXIAL) == (1, False)
    assert slicing((5, 20, 30), "K", SAGITTAL) == (2, False), "a chosen other axis cuts the planes as they lie"
    assert slicing((5, 20, 30), "J", SAGITTAL) == (1, True), "the axial axis chosen: cut as Auto cuts it"
    assert slicing((1, 20, 30), "K", SAGITTAL) == (2, False) and slicing((5, 20, 30), 0) == (0, False)
    with pytest.raises(ValueError, match="direction"):
        slicing((5, 20, 30), None, [[1.0, 2.0]])


@pytest.mark.parametrize("direction, permutation", [(SAGITTAL, (2, 0, 1)), (CORONAL, (1, 0, 2))])
def test_a_volume_stored_sagittally_or_coronally_is_segmented_as_its_axial_slices(direction, permutation):
    """The same head stored along other axes: the predictor gets the axial planes, the masks land back."""
    axial = _four_slices()  # (k, j, i): K foot to head, J front to back, I right to left
    stored = np.ascontiguousarray(np.transpose(axial, permutation))
    reference: list[dict] = []
    expected, expected_prob = predict_volume(axial, StandIn(), with_probability=True, slice_reports=reference)
    stand_in, reports = StandIn(), []
    labels, prob = predict_volume(stored, stand_in, with_probability=True, slice_reports=reports, direction=direction)
    assert {shape for call in stand_in.calls for shape in call} == {(6, 8)}, "the axial plane, rows front to back"
    assert np.array_equal(labels, np.transpose(expected, permutation))
    assert np.array_equal(prob, np.transpose(expected_prob, permutation))
    assert [(r["index"], r["verdict"], r["tumor_score"]) for r in reports] == [
        (r["index"], r["verdict"], r["tumor_score"]) for r in reference
    ]
    assert reports[2]["components"] == reference[2]["components"], "boxes in the plane as the predictor saw it"
    # the axial axis chosen: as Auto; another one: its planes as they lie
    chosen = StandIn()
    assert np.array_equal(predict_volume(stored, chosen, axis="J", direction=direction)[0], labels == 1)
    assert {s for call in chosen.calls for s in call} == {(6, 8)}
    chosen = StandIn()
    predict_volume(stored, chosen, axis="K", direction=direction)
    assert {s for call in chosen.calls for s in call} == {stored.shape[1:]}


def test_rectangular_pixels_reach_the_predictor_square_and_every_result_lands_on_the_volumes_grid():
    """Axial slices whose rows lie 3 mm apart and columns 1 mm (a coronal acquisition of 3 mm slices, cut
    axially): the predictor gets them three times taller, and each voxel gets the result at its centre."""
    reference: list[dict] = []
    expected, expected_prob = predict_volume(_four_slices(), StandIn(), with_probability=True, slice_reports=reference)
    stand_in, reports = StandIn(), []
    labels, prob = predict_volume(
        _four_slices(), stand_in, with_probability=True, slice_reports=reports, spacing=(1.0, 3.0, 5.0)
    )
    assert {s for call in stand_in.calls for s in call} == {(18, 8)}
    # a voxel's centre is a row of the taller plane where the interpolation left the voxel's value as it was
    assert np.array_equal(labels, expected) and np.allclose(prob, expected_prob)
    assert [(r["verdict"], r["tumor_score"]) for r in reports] == [(r["verdict"], r["tumor_score"]) for r in reference]
    # the 2x2 tumor at (row 1, column 2) was 6 rows tall for the predictor: its box and area in the voxels' pixels
    assert reports[2]["components"] == [{"bbox": [2, 1, 2, 2], "area": 4, "confidence": 0.8}]
    for spacing in (None, (1.0, 1.0, 1.0), (0.5, 0.505, 3.0)):  # square within 2%: as they lie
        stand_in = StandIn()
        predict_volume(_four_slices(), stand_in, spacing=spacing)
        assert {s for call in stand_in.calls for s in call} == {(6, 8)}, spacing
    stand_in = StandIn()
    predict_volume(_four_slices(), stand_in, spacing=(2.0, 1.0, 1.0))  # columns 2 mm apart: twice as wide
    assert {s for call in stand_in.calls for s in call} == {(6, 16)}
    for bad in ((1.0, 0.0, 1.0), (1.0, 1.0), ("a", 1, 1), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="spacing"):
            predict_volume(_four_slices(), StandIn(), spacing=bad)


def test_bad_volumes_batch_sizes_and_predictor_answers_are_refused():
    for shape in ((8, 8), (2, 8, 8, 2), (2, 8, 8, 5), (2, 3, 4, 5), (2, 8, 8, 0), (2, 8, 8, 3, 1), (1, 2, 3, 4, 5)):
        bad = np.zeros(shape)
        with pytest.raises(ValueError, match="expected a \\(k, j, i\\) or \\(k, j, i, 3\\|4\\) volume array"):
            predict_volume(bad, StandIn())
    for empty in ((0, 8, 8), (2, 8, 0), (2, 0, 8, 3)):
        with pytest.raises(ValueError, match="the volume is empty"):
            predict_volume(np.zeros(empty), StandIn())
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            predict_volume(np.zeros((2, 4, 4)), StandIn(), batch_size=bad)
    assert predict_volume(np.zeros((2, 4, 4)), StandIn(), batch_size=np.int64(1))[0].shape == (2, 4, 4)

    class Short(StandIn):
        def predict_arrays(self, images, **kwargs):
            return super().predict_arrays(images, **kwargs)[:-1]

    with pytest.raises(ValueError, match="the predictor returned 1 results for 2 slices"):
        predict_volume(np.zeros((2, 4, 4)), Short())

    class Long(StandIn):
        def predict_arrays(self, images, **kwargs):
            return super().predict_arrays([*images, images[0]], **kwargs)

    with pytest.raises(ValueError, match="the predictor returned 3 results for 2 slices"):
        predict_volume(np.zeros((2, 4, 4)), Long())

    class Small(StandIn):
        def predict_arrays(self, images, with_probability=False, **kwargs):
            return [(np.zeros((2, 2)), np.zeros((4, 4))) if with_probability else np.zeros((2, 2)) for _ in images]

    with pytest.raises(ValueError, match=r"mask for slice 0 has shape \(2, 2\), expected \(4, 4\)"):
        predict_volume(np.zeros((2, 4, 4)), Small())

    class Large(StandIn):
        def predict_arrays(self, images, with_probability=False, **kwargs):
            return [np.zeros((4, 5)) for _ in images]

    with pytest.raises(ValueError, match=r"mask for slice 0 has shape \(4, 5\), expected \(4, 4\)"):
        predict_volume(np.zeros((2, 4, 4)), Large())

    class SmallProbability(StandIn):
        def predict_arrays(self, images, with_probability=False, **kwargs):
            return [(np.zeros((4, 4)), np.zeros((4, 3))) for _ in images]

    with pytest.raises(ValueError, match=r"probability for slice 0 has shape \(4, 3\), expected \(4, 4\)"):
        predict_volume(np.zeros((2, 4, 4)), SmallProbability(), with_probability=True)


# --------------------------------------------------------------------------- slice reports and label maps


def _four_slices() -> np.ndarray:
    """Slice 0 empty; slice 1 a faint 40 (a score above 0, nothing found); slice 2 a tumor of 2x2 at
    (row 1, col 2); slice 3 a possible tumor of 3 px, away from slice 2's tumor."""
    volume = np.zeros((4, 6, 8), np.float32)
    volume[1, 0, 0] = 40.0
    volume[2, 1:3, 2:4] = 204.0
    volume[3, 4, 5:8] = 76.5
    return volume


def test_slice_reports_and_the_label_map():
    reports: list[dict] = []
    labels, prob = predict_volume(_four_slices(), StandIn(), batch_size=3, with_probability=True, slice_reports=reports)
    expected = np.zeros((4, 6, 8), np.uint8)
    expected[2, 1:3, 2:4] = 1
    expected[3, 4, 5:8] = 2
    assert np.array_equal(labels, expected) and np.array_equal(prob, _four_slices() / 1000)
    assert [r["index"] for r in reports] == [0, 1, 2, 3]
    assert [r["verdict"] for r in reports] == [NO_TUMOR, NO_TUMOR, TUMOR, POSSIBLE_TUMOR]
    assert [r["tumor_found"] for r in reports] == [False, False, True, False]
    assert [r["tumor_score"] for r in reports] == [0.0, round(40 / 255, 4), 0.8, 0.3]
    assert [r["input_distance"] for r in reports] == [0.0, 40.0, 204.0, 76.5]
    assert reports[2]["components"] == [{"bbox": [2.0, 1.0, 2.0, 2.0], "area": 4, "confidence": 0.8}]
    assert reports[3]["possible_components"] == [{"bbox": [5.0, 4.0, 3.0, 1.0], "area": 3, "confidence": 0.3}]
    assert reports[2]["possible_components"] == [] and reports[0]["input_unusual"] is False


def test_the_volume_rule_sees_this_volumes_reports_only():
    stand_in = StandIn()
    stand_in.volume_rule = NeighbourSupport(min_support=0.1)
    earlier = {"index": 7, "verdict": TUMOR, "components": [{"confidence": 0.5}], "possible_components": []}
    reports: list[dict] = [dict(earlier)]  # a list that holds an earlier volume's slice already
    labels, _ = predict_volume(_four_slices(), stand_in, slice_reports=reports)
    assert reports[0] == earlier and [r["index"] for r in reports[1:]] == [0, 1, 2, 3]
    assert reports[3]["verdict"] == POSSIBLE_TUMOR and (labels == 2).sum() == 7


def test_the_predictors_volume_rule_decides_the_slices_with_their_neighbours():
    stand_in = StandIn()
    stand_in.volume_rule = NeighbourSupport(min_support=0.1)  # slice 2's tumor has nothing under it above or below
    reports: list[dict] = []
    labels, _ = predict_volume(_four_slices(), stand_in, slice_reports=reports)
    assert labels[2, 1:3, 2:4].tolist() == [[2, 2], [2, 2]] and not (labels == 1).any()
    assert reports[2]["verdict"] == POSSIBLE_TUMOR and reports[2]["unsupported"] is True
    # without slice reports the rule is not applied (a 0/1 mask)
    assert predict_volume(_four_slices(), stand_in)[0][2, 1:3, 2:4].tolist() == [[1, 1], [1, 1]]


# --------------------------------------------------------------------------- files


def test_a_volume_file_gets_its_mask_with_its_geometry_and_counts_slices_by_verdict(tmp_path):
    import itk

    tilted = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    write_volume(tmp_path / "case.nrrd", _four_slices(), [0.5, 0.5, 4.0], [12.5, -20.0, 7.0], tilted)
    result = segment_medical_file(StandIn(), tmp_path / "case.nrrd", tmp_path / "out" / "case.nii.gz", batch_size=3)
    expected = np.zeros((4, 6, 8), np.uint8)
    expected[2, 1:3, 2:4] = 1
    expected[3, 4, 5:8] = 2
    assert np.array_equal(result.mask, expected) and result.array.shape == (4, 6, 8)
    assert result.mask_path == str(tmp_path / "out" / "case.nii.gz")
    written = itk.imread(result.mask_path)
    assert np.array_equal(itk.array_from_image(written), expected)
    assert np.allclose(written.GetSpacing(), [0.5, 0.5, 4.0]) and np.allclose(written.GetOrigin(), [12.5, -20.0, 7.0])
    assert np.allclose(itk.array_from_matrix(written.GetDirection()), tilted)
    row = result.row
    # slice 1 has a score above 0 and nothing found: one slice of four has a tumor
    assert (row["n_slices"], row["slices_with_tumor"], row["slices_with_possible_tumor"]) == (4, 1, 1)
    assert (row["file_name"], row["verdict"], row["tumor_score"]) == ("case.nrrd", TUMOR, 0.8)
    assert (row["n_components"], row["tumor_area_px"], row["n_possible"], row["possible_area_px"]) == (1, 4, 1, 3)
    assert row["unusual_slices"] == 0 and row["input_unusual"] is False
    assert len(result.slice_reports) == 4
    assert result.slice_report_path == str(tmp_path / "out" / "case_slices.csv")  # beside the mask
    with open(result.slice_report_path, newline="", encoding="utf-8") as f:
        slices_read = list(csv.DictReader(f))
    assert [r["slice"] for r in slices_read] == ["0", "1", "2", "3"]
    labels = [set(np.unique(plane).tolist()) for plane in expected]
    for r, plane in zip(slices_read, labels):  # the mask's slice of that index says the same
        assert (r["tumor_found"] == "True") == (1 in plane) and (r["possible_tumor"] == "True") == (2 in plane), r


def test_a_sagittal_volume_file_is_cut_into_its_axial_slices_and_its_mask_keeps_the_files_layout(tmp_path):
    import itk

    stored = np.ascontiguousarray(np.transpose(_four_slices(), (2, 0, 1)))  # (8, 4, 6): K right to left
    # 3 mm axial slices, stored sagittally: I front to back, J foot to head (3 mm), K right to left
    write_volume(tmp_path / "sagittal.nrrd", stored, [0.9, 3.0, 0.9], [5.0, 6.0, 7.0], SAGITTAL)
    result = segment_medical_file(StandIn(), tmp_path / "sagittal.nrrd", tmp_path / "out" / "sagittal.nii.gz")
    axial = segment_medical_file(StandIn(), _axial_file(tmp_path), tmp_path / "out" / "axial.nii.gz")
    assert (result.slice_axis, result.transposed) == ("J", True)
    assert (axial.slice_axis, axial.transposed) == ("K", False)
    assert (result.cut_note(), axial.cut_note()) == ("axial slices along J", "")
    written = itk.array_from_image(itk.imread(result.mask_path))
    assert written.shape == (8, 4, 6) and np.array_equal(written, np.transpose(axial.mask, (2, 0, 1)))
    assert [np.array_equal(a, b) for a, b in zip(result.planes(result.array), axial.planes(axial.array))] == [True] * 4
    assert [np.array_equal(a, b) for a, b in zip(result.planes(result.mask), axial.planes(axial.mask))] == [True] * 4
    with open(result.slice_report_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(axial.slice_report_path, newline="", encoding="utf-8") as f:
        assert rows == list(csv.DictReader(f)), "slice k of the report is the k-th axial slice"
    assert {k: v for k, v in result.row.items() if k != "file_name"} == {
        k: v for k, v in axial.row.items() if k != "file_name"
    }


def test_a_coronal_file_of_thick_slices_is_segmented_with_square_pixels_and_its_mask_keeps_the_files_grid(tmp_path):
    import itk

    stored = np.ascontiguousarray(np.transpose(_four_slices(), (1, 0, 2)))  # (6, 4, 8): K front to back
    write_volume(tmp_path / "coronal.nrrd", stored, [0.9, 3.0, 2.7], [5.0, 6.0, 7.0], CORONAL)  # 2.7 mm slices
    result = segment_medical_file(StandIn(), tmp_path / "coronal.nrrd", tmp_path / "out" / "coronal.nii.gz")
    axial = segment_medical_file(StandIn(), _axial_file(tmp_path), tmp_path / "out" / "axial.nii.gz")
    assert (result.slice_axis, result.transposed, result.spacing) == ("J", False, (0.9, 3.0, 2.7))
    assert result.cut_note() == "axial slices along J, 2.7 x 0.9 mm pixels made square" and axial.cut_note() == ""
    written = itk.array_from_image(itk.imread(result.mask_path))
    assert written.shape == (6, 4, 8) and np.array_equal(written, np.transpose(axial.mask, (1, 0, 2)))
    assert np.allclose(itk.imread(result.mask_path).GetSpacing(), [0.9, 3.0, 2.7])
    # the overlays' planes: the axial slices with square pixels, the image interpolated, the labels at their place
    images, masks = result.planes(result.array), result.planes(result.mask, labels=True)
    assert {p.shape for p in images} == {p.shape for p in masks} == {(18, 8)}
    assert [np.array_equal(m[1::3], a) for m, a in zip(masks, axial.planes(axial.mask))] == [True] * 4
    assert [np.allclose(i[1::3], a) for i, a in zip(images, axial.planes(axial.array))] == [True] * 4
    assert [(r["verdict"], r["tumor_score"]) for r in result.slice_reports] == [
        (r["verdict"], r["tumor_score"]) for r in axial.slice_reports
    ]


def _axial_file(tmp_path) -> str:
    path = tmp_path / "axial.nrrd"
    write_volume(path, _four_slices(), [0.9, 0.9, 3.0], [5.0, 6.0, 7.0], AXIAL)
    return str(path)


def test_a_2d_file_is_one_slice_with_a_2d_mask_and_an_image_row(tmp_path):
    import itk

    grey = np.zeros((6, 8), np.float32)
    grey[2, 3] = 120.0
    write_volume(tmp_path / "slice.nrrd", grey, [0.7, 0.7], [1.0, 2.0], np.eye(2))
    result = segment_medical_file(StandIn(), tmp_path / "slice.nrrd", tmp_path / "slice_mask.nrrd")
    assert result.mask.shape == (6, 8) and np.argwhere(result.mask).tolist() == [[2, 3]]
    written = itk.imread(result.mask_path)
    assert itk.array_from_image(written).shape == (6, 8) and np.allclose(written.GetSpacing(), [0.7, 0.7])
    assert "n_slices" not in result.row and result.slice_report_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slice.nrrd", "slice_mask.nrrd"]  # no per-slice report
    assert (result.row["verdict"], result.row["tumor_score"], result.row["tumor_area_px"]) == (TUMOR, 0.4706, 1)


def test_more_than_half_the_slices_unusual_flags_the_volume_without_an_input_reference(tmp_path):
    volume = np.zeros((3, 4, 4), np.float32)
    volume[0:2, 0, 0] = 7.0  # the stand-in flags a slice whose maximum is 7
    write_volume(tmp_path / "odd.nrrd", volume, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], np.eye(3))
    row = segment_medical_file(StandIn(), tmp_path / "odd.nrrd", tmp_path / "odd_mask.nrrd").row
    assert row["unusual_slices"] == 2 and row["input_unusual"] is True
    assert (row["n_slices"], row["slices_with_tumor"], row["slices_with_possible_tumor"]) == (3, 0, 0)


def test_volume_segmentation_writes_each_mask_and_adds_the_rows_to_the_report(tmp_path, caplog):
    write_volume(tmp_path / "case.nrrd", _four_slices(), [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], np.eye(3))
    grey = np.zeros((6, 8), np.float32)
    write_volume(tmp_path / "blank.nrrd", grey, [1.0, 1.0], [0.0, 0.0], np.eye(2))

    class Report:
        def __init__(self):
            self.rows, self.calls = [], 0

        def add_rows(self, rows):  # the real writer writes its file again
            self.rows.extend(rows)
            self.calls += 1

    report = Report()
    files = [tmp_path / "case.nrrd", tmp_path / "blank.nrrd"]
    with caplog.at_level(logging.INFO, logger="scripts.volumes"):
        results = VolumeSegmentation(StandIn(), files, tmp_path / "masks", report, ".nrrd", batch_size=2).run()
    assert [r.mask_path for r in results] == [
        str(tmp_path / "masks" / "case.nrrd"),
        str(tmp_path / "masks" / "blank.nrrd"),
    ]
    assert all((tmp_path / "masks" / n).is_file() for n in ("case.nrrd", "blank.nrrd"))
    assert [r["file_name"] for r in report.rows] == ["case.nrrd", "blank.nrrd"]
    said = "tumor (tumor found on 1 of 4 slices; possible tumor on 1 of 4 slices)"
    slices = tmp_path / "masks" / "case_slices.csv"  # the volume's per-slice report, named in its line
    assert f"case.nrrd: {said} -> {tmp_path / 'masks' / 'case.nrrd'}, per slice: {slices}" in caplog.messages
    assert f"blank.nrrd: no tumor found -> {tmp_path / 'masks' / 'blank.nrrd'}" in caplog.messages
    assert VolumeSegmentation(StandIn(), [], tmp_path / "none", report).run() == []
    assert len(report.rows) == 2 and report.calls == 1, "no files: the report is left alone"
