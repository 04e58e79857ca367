"""MONAI's percentile intensity scaling, with the percentiles taken by numpy.

MONAI's ``ScaleIntensityRangePercentiles`` takes a tensor's percentiles with ``torch.quantile``
whenever the tensor holds under a million elements, and ``torch.quantile`` sorts the whole slice:
on a 256x256 slice on CPU that is several milliseconds, about a tenth of the bundle's end-to-end
time per image (``benchmarks/cpu_speed.py``). ``numpy.percentile`` (a partial sort) gives the same
linearly interpolated values in a fraction of that, and the range mapping done in numpy too spares
the metadata bookkeeping of each intermediate tensor. ``channel_wise``, the output type and the
metadata the input ``MetaTensor`` carries are handled by MONAI's own ``__call__``.
"""

from __future__ import annotations

from warnings import warn

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import ScaleIntensityRangePercentiles, ScaleIntensityRangePercentilesd
from monai.utils import convert_to_tensor

__all__ = ["NumpyScaleIntensityRangePercentiles", "NumpyScaleIntensityRangePercentilesd"]


class NumpyScaleIntensityRangePercentiles(ScaleIntensityRangePercentiles):
    """:class:`monai.transforms.ScaleIntensityRangePercentiles`, computed in numpy.

    Same arguments and results: the percentiles interpolate linearly between the nearest ranks, as
    ``torch.quantile`` does, and the range mapping is MONAI's ``ScaleIntensityRange`` arithmetic
    (including its warning and offset for a slice whose two percentiles are equal). The arithmetic is
    done on the numpy array too: on a tensor, MONAI's version spends most of its time creating and
    tracking metadata for each intermediate result.
    """

    def _normalize(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        a_min, a_max = (float(v) for v in np.percentile(arr, (self.lower, self.upper)))
        b_min, b_max = self.b_min, self.b_max
        if self.relative:
            if b_min is None or b_max is None:
                raise ValueError("If it is relative, b_min and b_max should not be None.")
            b_min, b_max = (
                (self.b_max - self.b_min) * (self.lower / 100.0) + self.b_min,
                (self.b_max - self.b_min) * (self.upper / 100.0) + self.b_min,
            )
        if a_max - a_min == 0.0:
            warn("Divide by zero (a_min == a_max)", Warning)
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
