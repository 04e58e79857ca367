"""Square pixels for the network, the results back on the input's own pixels (``bundle/scripts/square_pixels.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.square_pixels import (
    MAX_SIDE,
    plane_spacing,
    resample_linear,
    resample_nearest,
    scale_components,
    square_shape,
    volume_spacing,
)


def test_the_coarser_axis_is_lengthened_to_the_finer_spacing_and_near_square_pixels_are_left_alone():
    assert square_shape((24, 512), (6.0, 0.5)) == (288, 512)  # a coronal series of 6 mm slices, cut axially
    assert square_shape((256, 176), (1.0, 1.2)) == (256, 211)
    assert square_shape((256, 256), (0.9, 0.9)) == (256, 256)
    assert square_shape((256, 256), (0.9, 0.91)) == (256, 256), "within 2%: square enough"
    assert square_shape((20, 300), (100.0, 0.5)) == (MAX_SIDE, 300), "never larger than MAX_SIDE"
    assert square_shape((20, 3000), (1.0, 2.0)) == (20, 3000), "nor shorter than it was"


def test_a_planes_spacing_follows_the_axis_it_is_cut_along_and_its_transposition():
    spacing = (0.5, 0.7, 3.0)  # I, J, K
    assert plane_spacing(spacing, 2) == (0.7, 0.5)  # rows J, columns I
    assert plane_spacing(spacing, 1) == (3.0, 0.5)  # rows K, columns I
    assert plane_spacing(spacing, 0) == (3.0, 0.7)  # rows K, columns J
    assert plane_spacing(spacing, 1, transpose=True) == (0.5, 3.0)


def test_linear_interpolation_keeps_the_extent_and_the_values_at_shared_centres():
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tall = resample_linear(plane, (9, 4))
    assert tall.dtype == np.float32 and tall.shape == (9, 4)
    assert np.allclose(tall[1::3], plane), "the input's row centres are rows 1, 4 and 7 of the taller plane"
    assert np.allclose(tall[:, 0], [0, 0, 4 / 3, 8 / 3, 4, 16 / 3, 20 / 3, 8, 8]), "edges held, not extrapolated"
    rgb = np.stack([plane, plane + 1, plane + 2], axis=-1)
    assert resample_linear(rgb, (3, 8)).shape == (3, 8, 3)
    assert resample_linear(plane, (3, 4)) is plane


def test_each_pixel_takes_the_value_at_its_centre_so_labels_stay_labels():
    labels = np.zeros((9, 4), np.uint8)
    labels[3:6, 1] = 1
    labels[4, 2] = 2
    back = resample_nearest(labels, (3, 4))
    assert back.tolist() == [[0, 0, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    assert np.array_equal(resample_nearest(back, (9, 4))[1::3], back)
    assert set(np.unique(resample_nearest(labels, (5, 7)))) <= {0, 1, 2}


def test_components_found_on_square_pixels_are_reported_in_the_planes_own_pixels():
    found = [{"bbox": [2, 3, 2, 6], "area": 12, "confidence": 0.8}, {"bbox": [0, 0, 1, 1], "area": 1}]
    assert scale_components(found, (18, 8), (6, 8)) == [
        {"bbox": [2, 1, 2, 2], "area": 4, "confidence": 0.8},
        {"bbox": [0, 0, 1, 1], "area": 1},  # never smaller than a pixel
    ]
    assert scale_components([], (18, 8), (6, 8)) == []


@pytest.mark.parametrize("bad", [(1.0, 2.0), (1.0, -1.0, 1.0), (0, 1, 1), ("x", 1, 1), (np.inf, 1, 1), None])
def test_a_spacing_that_is_not_three_positive_numbers_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="^spacing: "):
        volume_spacing(bad)
    assert volume_spacing(np.array([0.5, 0.5, 3])) == (0.5, 0.5, 3.0)
