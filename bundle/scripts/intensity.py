"""MONAI's percentile intensity scaling, with the percentiles taken by numpy.

MONAI's ``ScaleIntensityRangePercentiles`` takes a tensor's percentiles with ``torch.quantile``
whenever the tensor holds under a million elements, and ``torch.quantile`` sorts the whole slice:
on a 256x256 slice on CPU that is several milliseconds, about a tenth of the bundle's end-to-end
time per image (``benchmarks/cpu_speed.py``). ``numpy.percentile`` (a partial sort) gives the same
linearly interpolated values in a fraction of that. Everything else, the range mapping, clipping,
``relative``, ``channel_wise`` and the metadata a ``MetaTensor`` carries, is MONAI's own.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles, ScaleIntensityRangePercentilesd
from monai.utils import convert_to_tensor

__all__ = ["NumpyScaleIntensityRangePercentiles", "NumpyScaleIntensityRangePercentilesd"]


class NumpyScaleIntensityRangePercentiles(ScaleIntensityRangePercentiles):
    """:class:`monai.transforms.ScaleIntensityRangePercentiles` with the percentiles from ``numpy.percentile``.

    Same arguments and results (both interpolate linearly between the nearest ranks).
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
        scaled = ScaleIntensityRange(
            a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=self.clip, dtype=self.dtype
        )
        return convert_to_tensor(scaled(img), track_meta=False)  # as MONAI's: the caller restores the metadata


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
