"""Does an input look like the slices the model was trained on? A check on its intensity histogram.

The model was trained on T1 contrast-enhanced MRI slices. Another sequence (T2, FLAIR), an
inverted or badly windowed export, a photo or a blank frame reaches the network all the same
and gets a mask. :class:`InputLikenessd` compares the preprocessed slice's intensity histogram
(the network's own input, after the bundle's percentile scaling) with those of the training
slices and flags one that lies farther from them than ``max_distance``, which
:func:`build_input_reference` sets at a high percentile of the training slices' own distances.
The flag travels with the prediction into every report, so the user is told "this input looks
unlike the training data" instead of being handed a mask that may mean nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .io import atomic_output

__all__ = ["InputLikenessd", "build_input_reference", "input_distance", "intensity_features", "load_input_reference"]

N_BINS = 16
#: Scaled intensities at or below this are background (air), counted apart from the head's histogram.
BACKGROUND = 0.05


def intensity_features(image: Any) -> np.ndarray:
    """The features of one preprocessed slice ((1, H, W) or (H, W), scaled to [0, 1]).

    The fraction of background pixels, then the head's (non-background) intensity histogram in
    :data:`N_BINS` bins over (``BACKGROUND``, 1], as fractions of the head's pixels.
    """
    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    arr = np.nan_to_num(arr.reshape(-1))
    head = arr[arr > BACKGROUND]
    hist, _ = np.histogram(np.clip(head, BACKGROUND, 1.0), bins=N_BINS, range=(BACKGROUND, 1.0))
    hist = hist / max(1, head.size)
    return np.concatenate([[1.0 - head.size / max(1, arr.size)], hist]).astype(np.float64)


def input_distance(features: np.ndarray, reference: Mapping[str, Any]) -> float:
    """Root-mean-square z-score of ``features`` against the reference's per-feature mean and spread."""
    mean = np.asarray(reference["mean"], dtype=np.float64)
    std = np.asarray(reference["std"], dtype=np.float64)
    return float(np.sqrt(np.mean(((np.asarray(features) - mean) / std) ** 2)))


def build_input_reference(
    images: Iterable[Any], percentile: float = 99.0, path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The reference from the training slices, preprocessed as the network sees them.

    Args:
        images: preprocessed training slices (e.g. the bundle's ``image_transforms`` output).
        percentile: ``max_distance`` is this percentile of the training slices' own distances.
        path: where to write it as JSON (atomically); not written when None.

    Raises:
        ValueError: fewer than 10 slices.
    """
    feats = np.stack([intensity_features(im) for im in images])
    if len(feats) < 10:
        raise ValueError(f"an input reference needs at least 10 training slices, got {len(feats)}")
    mean = feats.mean(axis=0)
    std = feats.std(axis=0) + 0.01  # a floor: a bin empty in training must not make any pixel there infinitely odd
    reference = {"n_bins": N_BINS, "background": BACKGROUND, "mean": mean.tolist(), "std": std.tolist()}
    distances = [input_distance(f, reference) for f in feats]
    reference["max_distance"] = float(np.percentile(distances, percentile))
    reference["percentile"] = float(percentile)
    reference["n_images"] = int(len(feats))
    if path is not None:
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(reference, f, indent=4)  # as Model Zoo's pretty-format-json hook wants it
            f.write("\n")
    return reference


def load_input_reference(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a reference written by :func:`build_input_reference`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a valid reference (named, with what is wrong).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: input reference not found")
    try:
        with open(p, encoding="utf-8") as f:
            ref = json.load(f)
        mean, std = np.asarray(ref["mean"], float), np.asarray(ref["std"], float)
        max_distance = float(ref["max_distance"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not an input reference ({type(e).__name__}: {e})") from None
    if mean.shape != (N_BINS + 1,) or std.shape != mean.shape or not (std > 0).all() or not max_distance > 0:
        raise ValueError(f"{p}: not an input reference (expected {N_BINS + 1} means, positive spreads and distance)")
    return ref


class InputLikenessd(MapTransform):
    """Flag inputs unlike the training slices: adds ``<key>_distance`` (float) and ``<key>_unusual`` (bool).

    Args:
        keys: the preprocessed image key(s).
        reference: a reference dict or the path of its JSON (:func:`build_input_reference`).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        reference: Mapping[str, Any] | str | os.PathLike = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference = dict(reference) if isinstance(reference, Mapping) else load_input_reference(reference)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            distance = input_distance(intensity_features(d[key]), self.reference)
            d[f"{key}_distance"] = round(distance, 4)
            d[f"{key}_unusual"] = bool(distance > self.reference["max_distance"])
        return d
