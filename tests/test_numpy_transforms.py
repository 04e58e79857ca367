"""The bundle's numpy/scipy versions of MONAI's percentile scaling and anti-aliased resize give MONAI's results."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import SAMPLE_SPLIT
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Invertd,
    LoadImaged,
    Resized,
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
)

from scripts.coco import coco_to_datalist
from scripts.numpy_transforms import (
    NumpyScaleIntensityRangePercentiles,
    NumpyScaleIntensityRangePercentilesd,
    ScipyAntiAliasResized,
    percentiles,
)
from scripts.transforms import ToGrayscaled


@pytest.fixture(scope="module")
def resized_slices() -> list[MetaTensor]:
    """The shipped sample slices, grey and resized as the bundle's image_transforms leave them before scaling."""
    load = Compose(
        [
            LoadImaged("image", reader="scripts.io.PILImageReader", ensure_channel_first=True, image_only=True),
            ToGrayscaled("image"),
            Resized("image", (256, 256), mode="bilinear", anti_aliasing=True),
        ]
    )
    return [load({"image": r["image"]})["image"] for r in coco_to_datalist(SAMPLE_SPLIT)]


@pytest.mark.parametrize("lower, upper, clip", [(0.5, 99.5, True), (5.0, 95.0, False), (0.0, 100.0, True)])
def test_same_values_as_monai_on_the_sample_slices(resized_slices, lower, upper, clip):
    ours = NumpyScaleIntensityRangePercentilesd("image", lower, upper, 0.0, 1.0, clip=clip)
    monai = ScaleIntensityRangePercentilesd("image", lower, upper, 0.0, 1.0, clip=clip)
    for image in resized_slices:
        a, b = monai({"image": image})["image"], ours({"image": image})["image"]
        assert isinstance(b, MetaTensor) and b.dtype == torch.float32
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5)
        # the resize stays on the image's trace, so Invertd can still map a prediction back
        assert [op["class"] for op in b.applied_operations] == [op["class"] for op in a.applied_operations]
        if clip:
            assert float(b.min()) >= 0.0 and float(b.max()) <= 1.0


@pytest.mark.parametrize("channel_wise", [False, True])
@pytest.mark.parametrize("relative", [False, True])
def test_same_values_as_monai_per_channel_and_relative(channel_wise, relative):
    image = torch.from_numpy(np.random.default_rng(3).gamma(2.0, size=(3, 40, 30)).astype(np.float32))
    image[1] *= 50.0  # channels on different scales: per-channel percentiles differ from the whole's
    args = {"lower": 2.0, "upper": 98.0, "b_min": -1.0, "b_max": 1.0, "clip": False}
    args.update(relative=relative, channel_wise=channel_wise)
    expected = ScaleIntensityRangePercentiles(**args)(image)
    np.testing.assert_allclose(NumpyScaleIntensityRangePercentiles(**args)(image), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        NumpyScaleIntensityRangePercentiles(**args)(image.numpy()), expected, rtol=1e-5, atol=1e-5
    )


def test_constant_slice_and_bad_percentiles_as_monai():
    flat = torch.full((1, 8, 8), 7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a blank slice is no error: nothing to warn a user about
        ours = NumpyScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(flat)
    np.testing.assert_array_equal(ours, ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(flat))
    with pytest.raises(ValueError, match="Percentiles must be in the range"):
        NumpyScaleIntensityRangePercentiles(-1.0, 99.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="b_min and b_max"):
        NumpyScaleIntensityRangePercentiles(1.0, 99.0, None, 1.0, relative=True)(flat)


@pytest.mark.parametrize("background, speck", [(0.0, 1000.0), (255.0, 3.0)])
def test_a_nearly_blank_slice_is_scaled_by_its_range(background, speck):
    """Fewer than 0.5% of the pixels differ: both percentiles are the background. MONAI would pass the speck on
    unscaled (1000 where the network knows 0..1); the slice's own range keeps it in 0..1, the picture kept."""
    image = np.full((1, 100, 100), background, dtype=np.float32)
    image[0, 40:44, 50:54] = speck  # 16 of 10,000 pixels
    out = np.asarray(NumpyScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(image))
    assert out.min() == 0.0 and out.max() == 1.0
    assert set(np.unique(out[0, 40:44, 50:54])) == {float(speck > background)}
    assert np.all(out[0, :40] == float(background > speck))


# --------------------------------------------------------------------------- percentiles by counting


def test_percentiles_are_numpy_s_to_the_bit_on_the_sample_slices(grey_slices):
    for image in grey_slices:  # whole grey levels at full size: the counted path
        arr = image.numpy()
        for q in [(0.5, 99.5), (0.0, 50.0), (12.3, 87.6, 99.99)]:
            ours = percentiles(arr, q)
            assert ours.dtype == np.float64
            np.testing.assert_array_equal(ours, np.percentile(arr, q))


@pytest.mark.parametrize("seed", range(40))
def test_percentiles_are_numpy_s_to_the_bit_on_whole_numbers(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 20_000))
    span = int(rng.choice([1, 2, 255, 4096, 65535]))
    offset = float(rng.choice([0.0, -1024.0, 3.0, -32768.0]))
    dtype = rng.choice([np.float32, np.float64])
    values = (rng.integers(0, span + 1, n) + offset).astype(dtype).reshape(1, -1)
    q = [0.5, 99.5] if seed % 2 else list(rng.uniform(0.0, 100.0, int(rng.integers(1, 5))))
    np.testing.assert_array_equal(percentiles(values, q), np.percentile(values, q))


@pytest.mark.parametrize(
    "values",
    [
        np.linspace(0.0, 1.0, 1000, dtype=np.float32),  # fractions
        np.array([0.0, 70_000.0, 3.0], dtype=np.float32),  # wider than 16 bits
        np.array([1.0, np.nan, 3.0], dtype=np.float32),
        np.array([1.0, np.inf, 3.0]),
        np.array([2**25, 2**25 + 4.0], dtype=np.float64),  # beyond float32's whole numbers
        np.arange(10, dtype=np.int16),  # integer dtypes: numpy's own arithmetic
        np.array([5.0], dtype=np.float32),  # one value
    ],
)
def test_percentiles_fall_back_to_numpy_elsewhere(values):
    for q in [(0.5, 99.5), (0.0, 100.0)]:
        np.testing.assert_array_equal(percentiles(values, q), np.percentile(values, q))


def test_percentiles_refuse_what_numpy_refuses():
    with pytest.raises(ValueError, match="Percentiles must be in the range"):
        percentiles(np.arange(10.0), (-1.0, 50.0))


# --------------------------------------------------------------------------- the anti-aliased resize


@pytest.fixture(scope="module")
def grey_slices() -> list[MetaTensor]:
    """The shipped sample slices, grey, at their own size (what the bundle's resize receives)."""
    load = Compose(
        [
            LoadImaged("image", reader="scripts.io.PILImageReader", ensure_channel_first=True, image_only=True),
            ToGrayscaled("image"),
        ]
    )
    return [load({"image": r["image"]})["image"] for r in coco_to_datalist(SAMPLE_SPLIT)]


def test_resize_same_values_as_monai_on_the_sample_slices(grey_slices):
    args = {"keys": "image", "spatial_size": (256, 256), "mode": "bilinear", "anti_aliasing": True}
    ours, monai = ScipyAntiAliasResized(**args), Resized(**args)
    for image in grey_slices:
        a, b = monai({"image": image})["image"], ours({"image": image})["image"]
        assert isinstance(b, MetaTensor) and b.shape == a.shape == (1, 256, 256)
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-3)  # 0..255 intensities
        assert [op["class"] for op in b.applied_operations] == ["Resize"]


@pytest.mark.parametrize("shape", [(1, 512, 700), (2, 300, 200), (1, 100, 100)])
@pytest.mark.parametrize("sigma", [None, 1.5])
def test_resize_same_values_as_monai_for_other_shapes_and_a_given_sigma(shape, sigma):
    image = MetaTensor(torch.from_numpy(np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)))
    args = {"keys": "image", "spatial_size": (256, 256), "mode": "bilinear", "anti_aliasing": True}
    args["anti_aliasing_sigma"] = sigma
    expected = Resized(**args)({"image": image})["image"]
    np.testing.assert_allclose(ScipyAntiAliasResized(**args)({"image": image})["image"], expected, atol=1e-3)


def test_resize_is_inverted_by_invertd_as_monai_s():
    image = MetaTensor(torch.from_numpy(np.random.default_rng(2).uniform(0, 1, (1, 480, 640)).astype(np.float32)))
    pre = Compose([ScipyAntiAliasResized("image", (256, 256), mode="bilinear", anti_aliasing=True)])
    d = pre({"image": image})
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)({**d, "pred": d["image"].clone()})
    assert back["pred"].shape == (1, 480, 640)
    with pytest.raises(ValueError, match="size_mode='all'"):
        ScipyAntiAliasResized("image", 256, size_mode="longest")
