"""Drop-in versions of two MONAI transforms of the bundle's preprocessing, computed in numpy and scipy.

Same arguments, same results to float precision, a fraction of the CPU time on one slice
(``benchmarks/cpu_speed.py`` prints each transform's time):

- MONAI's ``ScaleIntensityRangePercentiles`` takes a tensor's percentiles with ``torch.quantile``
  whenever it holds under a million elements, and ``torch.quantile`` sorts the whole slice;
  ``numpy.percentile`` (a partial sort) gives the same linearly interpolated values. The range
  mapping is done on the array too: on a ``MetaTensor`` MONAI's arithmetic spends most of its time
  on the metadata of each intermediate result.
- :func:`percentiles` counts instead of sorting when a slice holds whole numbers in a narrow range
  (8- and 16-bit pixels, as nearly every JPEG, PNG and DICOM slice does): the same values as
  ``numpy.percentile``, in about a third of its time on a 640x640 slice
  (``benchmarks/percentile_speed.py``).
- MONAI's ``Resize`` with ``anti_aliasing`` smooths with a separable Gaussian through
  ``torch.conv2d`` with zero padding, slow on CPU for a one-channel 640x640 slice;
  ``scipy.ndimage.correlate1d`` applies MONAI's own kernel (``gaussian_1d``) with the same padding.
  The resize itself, and its trace for ``Invertd``, stay MONAI's.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import Resized, ScaleIntensityRangePercentiles, ScaleIntensityRangePercentilesd
from monai.utils import convert_to_dst_type, convert_to_tensor, ensure_tuple_rep, fall_back_tuple
from scipy import ndimage

__all__ = [
    "NumpyScaleIntensityRangePercentiles",
    "NumpyScaleIntensityRangePercentilesd",
    "ScipyAntiAliasResized",
    "anti_alias",
    "percentiles",
]

#: the widest range of whole-number values :func:`percentiles` counts (16-bit pixels); wider ones are sorted
COUNTED_RANGE = 65536
#: whole numbers up to this magnitude are exact in float32, so subtracting the minimum keeps them whole
_EXACT_FLOAT32 = 2**24


def percentiles(values: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``numpy.percentile(values, q)`` (its default, linear method), counting values instead of sorting them.

    A float slice of whole numbers spanning at most :data:`COUNTED_RANGE` (8- and 16-bit pixels, as the
    bundle's readers hand them on) has each order statistic read off its cumulative histogram; the two nearest
    order statistics are then interpolated with ``numpy.percentile``'s own arithmetic, so the
    result is the same to the bit. Any other array (fractions, NaN or infinity, a wide range, integer
    dtypes, fewer than two values, a percentile outside 0..100 exclusive of 100) goes to
    ``numpy.percentile`` itself.

    Args:
        values: any array; all of its values are taken together.
        q: percentiles, each in 0..100.

    Returns:
        float64 array of ``len(q)`` values.
    """
    arr = np.asarray(values)
    flat = arr.ravel()
    n = flat.size
    virtual = (n - 1) * (np.asarray(q, dtype=np.float64) / 100.0)  # numpy's virtual index, method "linear"
    if arr.dtype.kind != "f" or n < 2 or virtual.ndim != 1 or not np.all((virtual >= 0) & (virtual < n - 1)):
        return np.percentile(arr, q)
    sample = flat[:: max(1, n // 1024)]
    if not np.array_equal(sample, np.floor(sample)):  # fractions (a resized slice): no full pass spent to learn it
        return np.percentile(arr, q)
    low, high = flat.min(), flat.max()  # NaN propagates: the range check below fails
    if not (-_EXACT_FLOAT32 < low <= high < _EXACT_FLOAT32 and high - low < COUNTED_RANGE):
        return np.percentile(arr, q)
    shifted = flat if low >= 0 and high < COUNTED_RANGE else flat - low  # 8-bit pixels: counted as they are
    offset = 0 if shifted is flat else low
    whole = shifted.astype(np.uint16)  # bincount reads 16-bit values faster than 64-bit ones
    if not np.array_equal(whole, shifted):
        return np.percentile(arr, q)
    rank_ends = np.cumsum(np.bincount(whole))  # rank_ends[v]: how many values are <= offset + v
    previous = np.floor(virtual)
    ranks = np.concatenate([previous, previous + 1]).astype(np.intp)
    order = np.searchsorted(rank_ends, ranks, side="right").astype(arr.dtype) + offset  # value of rank r
    a, b = order[: len(virtual)], order[len(virtual) :]
    gamma = virtual - previous
    # numpy's _lerp, step by step, so that the result is its own to the last bit
    diff = b - a
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return result


class NumpyScaleIntensityRangePercentiles(ScaleIntensityRangePercentiles):
    """:class:`monai.transforms.ScaleIntensityRangePercentiles`, computed in numpy.

    Same arguments and results: the percentiles interpolate linearly between the nearest ranks, as
    ``torch.quantile`` does (:func:`percentiles`), and the range mapping is MONAI's ``ScaleIntensityRange``
    arithmetic. The arithmetic is done on the numpy array too: on a tensor, MONAI's version spends most
    of its time creating and tracking metadata for each intermediate result.

    Two departures, where the two percentiles are equal: a slice that holds more than one value (nearly
    all background, a few bright pixels) is scaled by its minimum and maximum instead, where MONAI
    shifts it by ``b_min - a_min`` and leaves it unscaled and unclipped; a slice of one value becomes
    ``b_min`` throughout, as in MONAI, without MONAI's "Divide by zero" warning.
    """

    def _normalize(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        a_min, a_max = (float(v) for v in percentiles(arr, (self.lower, self.upper)))
        b_min, b_max = self.b_min, self.b_max
        if self.relative:
            if b_min is None or b_max is None:
                raise ValueError("If it is relative, b_min and b_max should not be None.")
            b_min, b_max = (
                (self.b_max - self.b_min) * (self.lower / 100.0) + self.b_min,
                (self.b_max - self.b_min) * (self.upper / 100.0) + self.b_min,
            )
        if a_max == a_min:
            # nearly one value throughout (a blank slice with a few bright pixels): MONAI's offset would hand
            # the network raw intensities (a 1000 where it knows 0..1); the slice's full range keeps it in range
            a_min, a_max = float(np.min(arr)), float(np.max(arr))
        if a_max - a_min == 0.0:  # one value: nothing to scale (a blank slice at a volume's end is no error)
            out = arr - a_min if b_min is None else arr - a_min + b_min
        else:
            out = (arr - a_min) / (a_max - a_min)
            if b_min is not None and b_max is not None:
                out = out * (b_max - b_min) + b_min
            if self.clip:
                out = np.clip(out, b_min, b_max)
        return convert_to_tensor(np.asarray(out, dtype=self.dtype or arr.dtype), track_meta=False)


class NumpyScaleIntensityRangePercentilesd(ScaleIntensityRangePercentilesd):
    """Dictionary wrapper of :class:`NumpyScaleIntensityRangePercentiles` (arguments as MONAI's ``...Percentilesd``)."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float,
        upper: float,
        b_min: float | None,
        b_max: float | None,
        clip: bool = False,
        relative: bool = False,
        channel_wise: bool = False,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, lower, upper, b_min, b_max, clip, relative, channel_wise, dtype, allow_missing_keys)
        self.scaler = NumpyScaleIntensityRangePercentiles(
            lower, upper, b_min, b_max, clip, relative, channel_wise, dtype
        )


def anti_alias(image: Any, out_size: Sequence[int], sigma: Sequence[float] | float | None = None) -> Any:
    """The Gaussian smoothing MONAI's ``Resize(anti_aliasing=True)`` applies before shrinking ``image`` to ``out_size``.

    As MONAI: nothing unless some spatial axis shrinks; per axis ``sigma = max(0, (factor - 1) / 2)``
    (``factor`` = input size / output size), or the given ``sigma`` on the shrinking axes only; the
    kernel is ``gaussian_1d(sigma, truncated=4.0, approx="erf")``, zero padding. An axis whose sigma
    is 0 is left as it is.

    Args:
        image: channel-first (C, *spatial) array or tensor; a ``MetaTensor`` keeps its metadata.
        out_size: the spatial size it will be resized to.
        sigma: MONAI's ``anti_aliasing_sigma``.

    Returns:
        the smoothed image, float32, of the input's type.
    """
    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    in_size = arr.shape[1:]
    if not any(o < i for o, i in zip(out_size, in_size)):
        return image
    factors = [i / o for i, o in zip(in_size, out_size)]
    if sigma is None:
        sigmas = [max(0.0, (f - 1.0) / 2.0) for f in factors]
    else:
        given = ensure_tuple_rep(sigma, len(in_size))
        sigmas = [float(g) * int(f > 1) for g, f in zip(given, factors)]
    out = arr
    for axis, s in enumerate(sigmas, start=1):
        if s > 0:
            kernel = gaussian_1d(torch.tensor(s), truncated=4.0, approx="erf").numpy()
            out = ndimage.correlate1d(out, kernel, axis=axis, mode="constant", cval=0.0)
    dtype = torch.float32 if isinstance(image, torch.Tensor) else np.float32
    return convert_to_dst_type(out, dst=image, dtype=dtype)[0]


class ScipyAntiAliasResized(Resized):
    """MONAI's ``Resized`` whose anti-aliasing Gaussian runs in scipy (:func:`anti_alias`).

    Same arguments as ``Resized`` (``size_mode="all"``, not lazy); the resize, its trace and its
    inverse are MONAI's.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        size_mode: str = "all",
        mode: Any = "area",
        align_corners: Any = None,
        anti_aliasing: Sequence[bool] | bool = False,
        anti_aliasing_sigma: Any = None,
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        if size_mode != "all" or lazy:
            raise ValueError("ScipyAntiAliasResized: only size_mode='all', not lazy (use MONAI's Resized)")
        super().__init__(
            keys, spatial_size, size_mode, mode, align_corners, False, None, dtype, allow_missing_keys, lazy
        )
        self.smooth = ensure_tuple_rep(anti_aliasing, len(self.keys))
        self.smooth_sigma = ensure_tuple_rep(anti_aliasing_sigma, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        for key, smooth, sigma in self.key_iterator(d, self.smooth, self.smooth_sigma):
            if smooth:
                d[key] = anti_alias(d[key], fall_back_tuple(self.resizer.spatial_size, d[key].shape[1:]), sigma)
        return super().__call__(d, lazy)
