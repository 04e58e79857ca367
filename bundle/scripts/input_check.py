"""Does an input look like the slices the model was trained on? A check on its intensities.

The model was trained on T1 contrast-enhanced MRI slices. Another sequence (T2, FLAIR), an
inverted or badly windowed export, a photo or a blank frame reaches the network all the same
and gets a mask. :class:`InputLikenessd` compares the preprocessed slice (the network's own
input, after the bundle's percentile scaling) with the training slices: its intensity histogram,
and the brightness of the head's outer layer (scalp fat, the brightest tissue of a T1-weighted
image, darker in FLAIR and T2). It flags a slice that lies farther from them than
``max_distance``, which :func:`build_input_reference` sets at a high percentile of the training
slices' own distances. Two checks of the picture's make-up flag what the histogram can miss: a
picture that fills its frame to the edges (:func:`frame_fill`: a head slice has air around it; a
photo, a gradient or noise does not) and one grainier than any training slice
(:func:`graininess`: noise, a corrupt or badly decoded file). A FLAIR or T2 slice can pass all three:
the learned sequence check (:mod:`scripts.sequence_check`) runs after this one and flags it.
:func:`unusual_volume` judges a whole volume from its slices' distances and, with that check, their
probabilities of another sequence.
The flag travels with the prediction into every report, so the user is told "this input looks
unlike the training data" instead of being handed a mask that may mean nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .components import fill_holes
from .io import atomic_output

__all__ = [
    "FEATURE_WEIGHTS",
    "N_FEATURES",
    "InputLikenessd",
    "build_input_reference",
    "frame_fill",
    "graininess",
    "input_distance",
    "intensity_features",
    "load_input_reference",
    "outer_layer_brightness",
    "unusual_volume",
]

N_BINS = 16
#: Scaled intensities at or below this are background (air), counted apart from the head's histogram.
BACKGROUND = 0.05
#: The head's outer layer: this fraction of its depth (the scalp and its fat in an axial slice).
OUTER_LAYER = 0.05
#: The background share, the head's histogram, the brightness of its outer layer.
N_FEATURES = N_BINS + 2
#: How much each feature weighs in :func:`input_distance`. The outer layer's brightness weighs as much
#: as the 17 histogram features together: the histograms of T1 contrast volumes from other scanners
#: differ from the training slices' about as much as FLAIR ones do, the outer layer less so. On the
#: TCGA-LGG volumes (benchmarks/input_check_volumes.py) it flags 5 of 12 FLAIR volumes for 2 of 54 T1
#: contrast ones; the histogram alone, at a limit that flags as few T1 contrast volumes, flags 3.
FEATURE_WEIGHTS = (1.0,) * (N_BINS + 1) + (float(N_BINS + 1),)
#: A training volume's slices join the reference where the head's section is at least this share of its
#: largest: the vertex and skull base hold little brain, and the 2D training slices show none of them.
BRAIN_BEARING = 0.5
#: The frame's outer ring, as a fraction of its shorter side, where :func:`frame_fill` looks for the head.
FRAME_RING = 0.02
#: ``max_graininess`` is this many times the grainiest training slice's: other scanners' T1 contrast slices
#: come close to the training slices' largest (TCGA-LGG brain-bearing slices: 0.10 at the 95th percentile,
#: the COCO training slices 0.085 at most), Gaussian noise lies near 0.28, uniform noise near 0.5.
GRAIN_MARGIN = 2.0


def _plane(image: Any) -> np.ndarray:
    """The slice as a finite (H, W) float32 array: a channel-first (C, H, W) slice is averaged over C."""
    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    arr = np.nan_to_num(arr)
    if arr.ndim < 2:
        return arr.reshape(1, -1)
    return arr.reshape(-1, *arr.shape[-2:]).mean(axis=0)


def outer_layer_brightness(image: Any) -> float:
    """The mean scaled intensity of the head's outer layer, the outer :data:`OUTER_LAYER` of its depth.

    In an axial slice that layer is the scalp: subcutaneous fat, the brightest tissue of a T1-weighted
    image, darker in FLAIR and T2 images after the same percentile scaling. The head is what lies
    above half the slice's Otsu threshold (noise and faint margins in the air stay outside, where the
    fixed :data:`BACKGROUND` would take some in), opened, holes filled, its largest piece. The
    frame's edge counts as outside: a head cut by the frame has an edge there.

    Args:
        image: one preprocessed slice ((1, H, W) or (H, W), scaled to [0, 1]).

    Returns:
        the layer's mean intensity; 0.0 for a slice without a head (blank, or too small to tell).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    plane = _plane(image)
    if min(plane.shape) < 8 or not np.ptp(plane) > 1e-6:
        return 0.0
    head = fill_holes(ndimage.binary_opening(plane > 0.5 * threshold_otsu(plane), iterations=2))
    labels, count = ndimage.label(head)
    if count == 0:
        return 0.0
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    # within the head's box, padded with one ring of air: the nearest air pixel of any head pixel is as near
    # there as in the whole frame (or a frame edge the box touches), and the distance transform costs less
    box = ndimage.find_objects(labels, max_label=largest)[largest - 1]
    head = labels[box] == largest
    depth = ndimage.distance_transform_edt(np.pad(head, 1))[1:-1, 1:-1]
    # at least the one-pixel edge: a small section (vertex) is thinner than 1/OUTER_LAYER pixels
    layer = head & (depth <= max(1.0, OUTER_LAYER * float(depth.max())))
    return float(plane[box][layer].mean())


def frame_fill(image: Any, content: Sequence[float] | None = None) -> float:
    """The share of the frame's outer ring (:data:`FRAME_RING` of its shorter side) brighter than :data:`BACKGROUND`.

    A head slice has air around the head: the ring is mostly dark (a zoomed training slice reaches
    about 0.7). A photo, a screenshot, a gradient or noise fills the frame to its edges (near 1).

    Args:
        image: one preprocessed slice ((1, H, W) or (H, W), scaled to [0, 1]).
        content: where the slice itself lies in a frame padded around it, ``[top, bottom, left, right]``
            as fractions of the frame's sides (``<key>_content`` of
            :class:`~scripts.transforms.PadToSquared`): the ring is that window's, not the padding's.
    """
    plane = _content_window(_plane(image), content)
    width = max(1, int(round(FRAME_RING * min(plane.shape))))
    if 2 * width >= min(plane.shape):
        return float((plane > BACKGROUND).mean())
    ring = np.ones(plane.shape, dtype=bool)
    ring[width:-width, width:-width] = False
    return float((plane[ring] > BACKGROUND).mean())


def _content_window(plane: np.ndarray, content: Sequence[float] | None) -> np.ndarray:
    """The part of ``plane`` that ``content`` (fractions ``[top, bottom, left, right]``) names, rounded inward
    by a pixel where it meets the padding (the resize blurs that edge); the whole plane without it."""
    if content is None:
        return plane
    top, bottom, left, right = (float(v) for v in content)
    height, width = plane.shape
    rows = slice(int(np.ceil(top * height)) + (top > 0), int(np.floor(bottom * height)) - (bottom < 1))
    cols = slice(int(np.ceil(left * width)) + (left > 0), int(np.floor(right * width)) - (right < 1))
    window = plane[rows, cols]
    return window if window.size else plane


def graininess(image: Any) -> float:
    """How grainy the head is: the mean absolute difference from the 4-neighbour mean, over its mean intensity.

    MRI slices are smooth between edges (the COCO training slices: 0.06 median, 0.085 at most); noise,
    or a file decoded wrongly, is not (uniform noise: about 0.5, Gaussian noise 0.28). The head is what
    lies above :data:`BACKGROUND` (the frame's outermost pixels left out); 0 for a slice without one.

    Args:
        image: one preprocessed slice ((1, H, W) or (H, W), scaled to [0, 1]).
    """
    plane = _plane(image)
    inner = plane[1:-1, 1:-1]
    head = inner > BACKGROUND
    if not head.any():
        return 0.0
    neighbours = 0.25 * (plane[:-2, 1:-1] + plane[2:, 1:-1] + plane[1:-1, :-2] + plane[1:-1, 2:])
    return float(np.abs(inner - neighbours)[head].mean() / inner[head].mean())


def intensity_features(image: Any) -> np.ndarray:
    """The :data:`N_FEATURES` features of one preprocessed slice ((1, H, W) or (H, W), scaled to [0, 1]).

    The fraction of background pixels; the head's (non-background) intensity histogram in
    :data:`N_BINS` bins over (``BACKGROUND``, 1], as fractions of the head's pixels; the brightness
    of the head's outer layer (:func:`outer_layer_brightness`).
    """
    plane = _plane(image)
    arr = plane.reshape(-1)
    head = arr[arr > BACKGROUND]
    hist, _ = np.histogram(np.clip(head, BACKGROUND, 1.0), bins=N_BINS, range=(BACKGROUND, 1.0))
    hist = hist / max(1, head.size)
    features = [1.0 - head.size / max(1, arr.size), *hist, outer_layer_brightness(plane)]
    return np.asarray(features, dtype=np.float64)


def input_distance(features: np.ndarray, reference: Mapping[str, Any]) -> float:
    """Weighted root-mean-square z-score of ``features`` against the reference's per-feature mean and spread.

    The weights are the reference's ``weights`` (:data:`FEATURE_WEIGHTS` when it was built); equal
    weights for a reference without them.
    """
    mean = np.asarray(reference["mean"], dtype=np.float64)
    std = np.asarray(reference["std"], dtype=np.float64)
    weights = np.asarray(reference.get("weights", np.ones_like(mean)), dtype=np.float64)
    z2 = ((np.asarray(features, dtype=np.float64) - mean) / std) ** 2
    return float(np.sqrt(np.sum(weights * z2) / np.sum(weights)))


def unusual_volume(
    distances: Sequence[float],
    reference: Mapping[str, Any],
    flags: Sequence[bool] | None = None,
    other_sequence: Sequence[float | None] | None = None,
    other_sequence_threshold: float | None = None,
) -> bool:
    """Does a whole volume look unlike the training data, judged from its slices' :func:`input_distance`?

    The median slice distance is compared with the reference's ``max_volume_distance``, the largest
    median among its training volumes (:func:`build_input_reference` with ``volumes``), so no training
    volume is flagged; a reference built from 2D slices only has none and ``max_distance`` stands in
    (about: more than half the slices unusual). The median, not the share of flagged slices or the largest
    distance: the vertex, skull base and neck slices of a T1 contrast volume lie far from the training
    slices too, while another sequence or a bad export is unlike them on most of its slices. With
    ``flags``, a volume is unusual too when more than half its slices were flagged by the make-up
    checks (:func:`frame_fill`, :func:`graininess`: flagged within ``max_distance``): a volume of
    noise has a histogram close enough to the training slices'. With ``other_sequence``, a volume is
    unusual too when the median of its slices' probabilities of another sequence
    (:class:`~scripts.sequence_check.OtherSequenced`) exceeds ``other_sequence_threshold``: most of its
    slices look like another sequence.

    Args:
        distances: the slices' distances (``<key>_distance`` of :class:`InputLikenessd`, the
            ``input_distance`` of a prediction), in any order; None and non-finite values are left out.
        reference: the reference (:func:`load_input_reference`).
        flags: the slices' ``<key>_unusual`` flags, in the order of ``distances``; None: the distances alone.
        other_sequence: the slices' ``<key>_other_sequence`` probabilities, in any order; None and
            non-finite values are left out; None: no sequence rule.
        other_sequence_threshold: the sequence rule's limit; None:
            :data:`~scripts.sequence_check.OTHER_SEQUENCE_THRESHOLD`.

    Returns:
        True when the volume looks unusual; False for a volume without any distance.
    """
    from .sequence_check import OTHER_SEQUENCE_THRESHOLD

    scores = np.asarray([p for p in other_sequence or () if p is not None], dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    sequence_limit = OTHER_SEQUENCE_THRESHOLD if other_sequence_threshold is None else other_sequence_threshold
    if scores.size and np.median(scores) > sequence_limit:
        return True
    pairs = list(zip(distances, [False] * len(distances) if flags is None else flags))
    values = np.asarray([d for d, _ in pairs if d is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    limit = float(reference.get("max_volume_distance", reference["max_distance"]))
    if np.median(values) > limit:
        return True
    make_up = sum(bool(f) for d, f in pairs if d is not None and np.isfinite(d) and d <= reference["max_distance"])
    return make_up > values.size / 2


def _brain_bearing(features: np.ndarray) -> np.ndarray:
    """Which slices of a volume (rows of its features) cut the head at least :data:`BRAIN_BEARING` of its widest."""
    head = 1.0 - features[:, 0]
    return head >= BRAIN_BEARING * head.max()


def build_input_reference(
    images: Iterable[Any],
    percentile: float = 99.0,
    path: str | os.PathLike | None = None,
    volumes: Iterable[Iterable[Any]] | None = None,
) -> dict[str, Any]:
    """The reference from the training slices, preprocessed as the network sees them.

    Args:
        images: preprocessed training slices (e.g. the bundle's ``image_transforms`` output).
        percentile: ``max_distance`` is this percentile of the training slices' own distances.
        path: where to write it as JSON (atomically); not written when None.
        volumes: training volumes, each its preprocessed slices in order. Their brain-bearing slices
            (:data:`BRAIN_BEARING`) join ``images``; ``max_volume_distance`` is the largest median
            slice distance among them (:func:`unusual_volume`).

    The reference also gets ``max_frame_fill``, the largest :func:`frame_fill` of the slices, and
    ``max_graininess``, :data:`GRAIN_MARGIN` times their largest :func:`graininess`.

    Raises:
        ValueError: fewer than 10 slices.
    """

    def measures(slices: Iterable[Any]) -> np.ndarray:
        """One row per slice: its intensity features, frame fill and graininess."""
        rows = [[*intensity_features(im), frame_fill(im), graininess(im)] for im in slices]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), N_FEATURES + 2)

    rows = [measures(images)]
    volume_rows = [v for v in (measures(volume) for volume in volumes or ()) if len(v)]
    rows.extend(v[_brain_bearing(v)] for v in volume_rows)
    volume_feats = [v[:, :N_FEATURES] for v in volume_rows]
    all_rows = np.concatenate(rows)
    if len(all_rows) < 10:
        raise ValueError(f"an input reference needs at least 10 training slices, got {len(all_rows)}")
    stacked = all_rows[:, :N_FEATURES]
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0) + 0.01  # a floor: a bin empty in training must not make any pixel there infinitely odd
    reference: dict[str, Any] = {
        "n_bins": N_BINS,
        "background": BACKGROUND,
        "outer_layer": OUTER_LAYER,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "weights": list(FEATURE_WEIGHTS),
    }
    distances = [input_distance(f, reference) for f in stacked]
    reference["max_distance"] = float(np.percentile(distances, percentile))
    reference["percentile"] = float(percentile)
    reference["n_images"] = int(len(stacked))
    reference["max_frame_fill"] = float(all_rows[:, N_FEATURES].max())
    reference["max_graininess"] = GRAIN_MARGIN * float(all_rows[:, N_FEATURES + 1].max())
    if volume_feats:
        medians = [np.median([input_distance(f, reference) for f in v]) for v in volume_feats]
        reference["max_volume_distance"] = float(max(medians))
        reference["n_volumes"] = len(volume_feats)
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
        weights = np.asarray(ref.get("weights", np.ones_like(mean)), float)
        max_distance = float(ref["max_distance"])
        max_volume_distance = float(ref.get("max_volume_distance", max_distance))
        # older references have no make-up limits: those checks are then off
        make_up_limits = [float(ref[k]) for k in ("max_frame_fill", "max_graininess") if k in ref]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{p}: not an input reference ({type(e).__name__}: {e})") from None
    if mean.shape != (N_FEATURES,):
        raise ValueError(
            f"{p}: not an input reference for these features (expected {N_FEATURES} means, got shape {mean.shape}): "
            "rebuild it with benchmarks/make_input_reference.py"
        )
    if std.shape != mean.shape or weights.shape != mean.shape or not (std > 0).all():
        raise ValueError(f"{p}: not an input reference (expected {N_FEATURES} positive spreads and weights)")
    if not ((weights >= 0).all() and weights.sum() > 0 and max_distance > 0 and max_volume_distance > 0):
        raise ValueError(f"{p}: not an input reference (expected non-negative weights, positive distances)")
    if not all(np.isfinite(v) and v > 0 for v in make_up_limits):
        raise ValueError(f"{p}: not an input reference (max_frame_fill and max_graininess must be positive numbers)")
    return ref


class InputLikenessd(MapTransform):
    """Flag inputs unlike the training slices: adds ``<key>_distance`` (float) and ``<key>_unusual`` (bool).

    A slice is unusual when its :func:`input_distance` exceeds the reference's ``max_distance``, or its
    :func:`frame_fill` its ``max_frame_fill``, or its :func:`graininess` its ``max_graininess`` (the
    last two where the reference has them).

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
            plane = _plane(d[key])  # once: every measure reads the same (H, W) plane
            distance = input_distance(intensity_features(plane), self.reference)
            d[f"{key}_distance"] = round(distance, 4)
            content = d.get(f"{key}_content")  # a slice padded to a square: its own frame's ring
            d[f"{key}_unusual"] = bool(
                distance > self.reference["max_distance"]
                or frame_fill(plane, content) > self.reference.get("max_frame_fill", np.inf)
                or graininess(plane) > self.reference.get("max_graininess", np.inf)
            )
        return d
