"""MONAI dictionary transforms for what is specific to COCO brain tumor data.

Everything else (loading, resizing, intensity, augmentation, inversion) is MONAI's own and
lives in the bundle's configs.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Pad, RandomizableTransform, Resize
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from .coco import rasterize_annotations
from .components import components_to_boxes
from .config_values import number, switch
from .io import mask_output_path, to_grey, write_mask
from .numpy_transforms import NumpyScaleIntensityRangePercentiles
from .tumor_crops import context_square, crop_square, paste_square
from .tumor_free import remove_tumor
from .verdict import label_map, png_mask, verdict_of

__all__ = [
    "CocoAnnotationsToBoxMapd",
    "CocoAnnotationsToMaskd",
    "PadToSquared",
    "RandTumorCropd",
    "ShrinkLarged",
    "RandTumorFreed",
    "RefineTumorOutlined",
    "SaveMaskd",
    "ToGrayscaled",
    "TumorProbabilityToMaskd",
]

#: The scaling of the bundle's ``image_transforms`` (0.5 and 99.5 percentiles to 0..1, clipped).
_PERCENTILE_SCALING = NumpyScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)


class CocoAnnotationsToMaskd(MapTransform):
    """Replace a record's COCO annotations with a channel-first label mask (1, H, W).

    The value under each key is the ``label`` entry that
    :func:`scripts.coco.coco_to_datalist` writes:
    ``{"height": H, "width": W, "annotations": [{"segmentation", "bbox", "label"}, ...]}``.
    Polygons and RLE are rasterized with pycocotools, a missing segmentation falls back to
    the bbox, several annotations are merged, and no annotation gives an empty mask.

    Args:
        keys: keys holding annotation entries.
        allow_missing_keys: don't raise when a key is absent (inference records).
    """

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            entry = _coco_entry(key, d[key])
            mask = rasterize_annotations(entry["annotations"], int(entry["height"]), int(entry["width"]))
            d[key] = MetaTensor(torch.from_numpy(mask[None]))
        return d


class CocoAnnotationsToBoxMapd(MapTransform):
    """Replace a record's COCO annotations with a box instance map (1, H, W), for box-supervised losses.

    Each annotation's box is drawn with its own id ``k = 1..K`` (0 is background), so the
    losses of :mod:`scripts.losses` find every box again as the extent of the pixels
    carrying its id, after resizing with nearest interpolation, flips and affine augmentation.
    The box is the annotation's ``bbox`` (rasterized as the COCO masks are), or the extent of
    its segmentation when it has no bbox. Larger boxes are drawn first, so a small box lying on
    a large one stays visible; ids follow that order. Every annotation is foreground: the class
    ``label`` is not kept. No annotation gives an all-zero map. The map is float32, so that it
    can be concatenated with the image (MONAI's ``ConcatItemsd``) for the pairwise term.

    Args:
        keys: keys holding annotation entries (the ``label`` of ``coco_to_datalist`` records).
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        ValueError: at call time, an entry that is not COCO annotations.
    """

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            entry = _coco_entry(key, d[key])
            height, width = int(entry["height"]), int(entry["width"])
            boxes = [_annotation_box_mask(ann, height, width) for ann in entry["annotations"]]
            boxes = sorted((b for b in boxes if b.any()), key=lambda b: -int(b.sum()))
            instance_map = np.zeros((height, width), dtype=np.float32)
            for k, box in enumerate(boxes, start=1):
                instance_map[box] = k
            d[key] = MetaTensor(torch.from_numpy(instance_map[None]))
        return d


def _coco_entry(key: Hashable, entry: Any) -> Mapping[str, Any]:
    """A record's COCO annotation entry (``coco_to_datalist``'s ``label``), or a ValueError naming the key."""
    if not isinstance(entry, Mapping) or "annotations" not in entry:
        raise ValueError(f"{key}: expected COCO annotations from coco_to_datalist, got {type(entry).__name__}")
    return entry


def _annotation_box_mask(annotation: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The (H, W) boolean box of an annotation: its bbox, else the extent of its segmentation."""
    bbox = annotation.get("bbox")
    if bbox:
        return rasterize_annotations([{"bbox": list(bbox)}], height, width) > 0
    drawn = rasterize_annotations([annotation], height, width) > 0
    box = np.zeros_like(drawn)
    if drawn.any():
        rows, cols = np.nonzero(drawn)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return box


class RandTumorFreed(RandomizableTransform, MapTransform):
    """With probability ``prob``, turn a training slice into a tumor-free one (:func:`remove_tumor`).

    The tumor boxes are read from the label's first channel (a box instance map from
    :class:`CocoAnnotationsToBoxMapd` or a box mask, nonzero inside a box). Each box, widened by
    ``margin``, is refilled with healthy tissue from the same slice, and the whole label is set
    to 0, so the box-supervised losses see a slice without a tumor (only their emptiness term
    applies). A slice whose boxes no source region clears is left as it is.

    Args:
        keys: the image keys to refill (channel-first).
        label_key: the label whose channel 0 holds the boxes; it is zeroed on conversion.
        prob: the probability of converting a slice.
        margin: see :func:`remove_tumor`.
        feather: see :func:`remove_tumor`.
        allow_missing_keys: don't raise when a key is absent.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection = "image",
        label_key: str = "label",
        prob: float = 0.25,
        margin: float = 0.1,
        feather: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_key = label_key
        self.margin = float(margin)
        self.feather = float(feather)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        label = d[self.label_key]
        boxes = np.asarray(label[0].detach().cpu() if isinstance(label, torch.Tensor) else label[0]) > 0
        refilled = {}
        for key in self.key_iterator(d):
            img = d[key]
            arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img)
            out = remove_tumor(arr, boxes, self.margin, self.feather)
            if out is None:
                return d  # no healthy source region: keep the tumor slice as it is
            refilled[key] = out
        for key, out in refilled.items():
            img = d[key]
            d[key] = (
                MetaTensor(torch.from_numpy(out), meta=getattr(img, "meta", None))
                if isinstance(img, torch.Tensor)
                else out
            )
        d[self.label_key] = label * 0
        return d


class ToGrayscaled(MapTransform):
    """Make a channel-first image one channel (:func:`~scripts.io.to_grey`, the one grey conversion).

    MRI slices are often stored as RGB(A) with R=G=B. 1 channel: kept. 2 (grey + alpha): the
    grey channel. 3 or 4 (RGB, RGBA): the mean of R, G and B, alpha dropped. Anything else is
    refused with a message naming the image.

    Args:
        keys: image keys, channel-first.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_grey(d[key], _name(d[key], key))
        return d


def _undo_if_last(image: Any, transform: InvertibleTransform) -> Any:
    """``transform.inverse(image)`` when ``transform`` was the last to change ``image``, else ``image``: a
    transform that left an image as it was (a small one not shrunk, a square one not padded) has nothing to undo."""
    ops = getattr(image, "applied_operations", None)
    return transform.inverse(image) if ops and ops[-1].get(TraceKeys.ID) == id(transform) else image


class ShrinkLarged(MapTransform, InvertibleTransform):
    """Shrink an image whose longer side exceeds ``max_size`` to that size (area averaging), invertibly.

    The network sees 256 px; the anti-aliased resize that gets it there smooths with a kernel
    that grows with the shrink factor, which on a 4000x4000 photo takes about a gigabyte. An
    area average to ``max_size`` first keeps memory flat at any input size; images of the
    training size (640 px) are left exactly as they were. ``Invertd`` undoes it with the
    other spatial transforms, so masks come back at the input's own size.

    Args:
        keys: channel-first image keys.
        max_size: the longest side kept as it is.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection = "image", max_size: int = 1024, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_size = int(max_size)
        self.resizer = Resize(spatial_size=self.max_size, size_mode="longest", mode="area")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if max(d[key].shape[1:]) > self.max_size:
                d[key] = self.resizer(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _undo_if_last(d[key], self.resizer)  # if this image was shrunk
        return d


class PadToSquared(MapTransform, InvertibleTransform):
    """Pad a slice whose sides differ to a square, invertibly, so that the resize does not stretch the head.

    The network sees square slices and learnt square slices. A rectangular one (a narrow field of
    view, or the axial slice of a volume stored sagittally: 256 x 176 for a common 3D T1) would be
    stretched by the resize to the network's size, and the head with it. Padding the shorter side
    on both sides with the slice's own lowest value (its air) keeps the head's proportions; the
    network then sees the head framed as in a square field of view. ``Invertd`` crops the padding
    away with the other spatial transforms, so masks come back at the input's own size. Square
    slices are left exactly as they were.

    A padded key gets ``<key>_content``: where the slice lies in the square, as fractions of its side
    ``[top, bottom, left, right]`` (they hold through the resize), so that the input check measures the
    slice's own frame, not the padding (:func:`~scripts.input_check.frame_fill`).

    Args:
        keys: channel-first keys, all of one spatial size (an image and its label are padded alike;
            a label's lowest value is its background, 0).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padder = Pad(mode="constant")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            height, width = d[key].shape[-2:]
            if height == width or not height or not width:
                continue
            side = max(height, width)
            top, left = (side - height) // 2, (side - width) // 2
            to_pad = [(0, 0)] * (d[key].ndim - 2) + [(top, side - height - top), (left, side - width - left)]
            d[key] = self.padder(d[key], to_pad=to_pad, constant_values=float(d[key].min()))
            d[f"{key}_content"] = [top / side, (top + height) / side, left / side, (left + width) / side]
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _undo_if_last(d[key], self.padder)  # if this slice was padded
        return d


class TumorProbabilityToMaskd(MapTransform):
    """The shipped post-processing: 2-channel softmax scores ``(2, H, W)`` to a 0/1 tumor mask ``(1, H, W)``.

    Thresholds the tumor channel into 8-connected components, each with a confidence (its mean
    tumor probability, :func:`~scripts.components.components_to_boxes`). Components less
    smaller than ``min_area_fraction`` of the image are dropped (specks on enhancing vessels and
    glands, not tumors), then those less confident than ``min_confidence``; of the rest,
    optionally only the largest is kept, and its holes filled. The slice's **tumor score** is
    the highest confidence of the components large enough to count (0 when there is none), so a
    tumor is reported exactly when the score reaches ``min_confidence``. Beside the mask, the
    record gets ``<key>_tumor_score`` (float) and ``<key>_components`` (a list of
    ``{"bbox": [x, y, w, h], "area": pixels, "confidence"}`` for the components kept, empty when
    no tumor is found). The inference and evaluate workflows both use it, so what evaluate
    measures is what inference writes.

    Candidates below the operating point are not dropped silently: those at or above
    ``possible_min_confidence`` are **possible tumors** (:mod:`scripts.verdict`), written as
    ``<key>_possible`` (a (1, H, W) 0/1 mask beside the tumor mask) and
    ``<key>_possible_components``; ``<key>_verdict`` is "tumor", "possible tumor" or "no tumor
    found". A confident component dropped by ``keep_largest_component`` is neither: the slice's
    tumor is the largest one.

    Args:
        keys: prediction keys, softmax scores with the tumor in channel 1.
        threshold: tumor probability at or above which a pixel is tumor, in (0, 1).
        keep_largest_component: keep only the largest confident component.
        fill_holes: fill the kept components' holes.
        min_confidence: the operating point: components below it are dropped, in [0, 1).
        min_area_fraction: components smaller than this fraction of the image are dropped, in [0, 1).
        possible_min_confidence: the lower operating point of possible tumors, in [0, ``min_confidence``];
            None (the default) or ``min_confidence``: no possible tumors.
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        ValueError: ``threshold`` is not in (0, 1), ``min_confidence`` or ``min_area_fraction`` not in
            [0, 1), ``possible_min_confidence`` above ``min_confidence``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        threshold: float = 0.5,
        keep_largest_component: bool = True,
        fill_holes: bool = False,
        min_confidence: float = 0.0,
        min_area_fraction: float = 0.0,
        possible_min_confidence: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 < number(threshold, "threshold") < 1.0:
            raise ValueError(f"threshold: must be a tumor probability in (0, 1), got {threshold!r}")
        if not 0.0 <= number(min_confidence, "min_confidence") < 1.0:
            raise ValueError(f"min_confidence: must be a component confidence in [0, 1), got {min_confidence!r}")
        if not 0.0 <= number(min_area_fraction, "min_area_fraction") < 1.0:
            raise ValueError(f"min_area_fraction: must be a fraction of the image in [0, 1), got {min_area_fraction!r}")
        possible = (
            float(min_confidence)
            if possible_min_confidence is None
            else number(possible_min_confidence, "possible_min_confidence")
        )
        if not 0.0 <= possible <= float(min_confidence):
            raise ValueError(
                f"possible_min_confidence: must be in [0, min_confidence={min_confidence}], "
                f"got {possible_min_confidence!r}"
            )
        self.possible_min_confidence = possible
        self.threshold = float(threshold)
        self.min_area_fraction = float(min_area_fraction)
        self.keep_largest_component = switch(keep_largest_component, "keep_largest_component")
        self.min_confidence = float(min_confidence)
        self.fill_holes = switch(fill_holes, "fill_holes")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            if scores.ndim != 3 or scores.shape[0] != 2:
                raise ValueError(f"{key}: expected (2, H, W) softmax scores, got shape {tuple(scores.shape)}")
            prob = np.asarray(scores[1].detach().cpu() if isinstance(scores, torch.Tensor) else scores[1], np.float32)
            found = components_to_boxes(prob >= self.threshold, prob)
            found = [c for c in found if c.area >= self.min_area_fraction * prob.size]
            kept = [c for c in found if c.score >= self.min_confidence]
            possible = [c for c in found if self.possible_min_confidence <= c.score < self.min_confidence]
            if self.keep_largest_component and kept:
                kept = [max(kept, key=lambda c: c.area)]
            d[key] = self._as_output(scores, kept, prob.shape)
            d[f"{key}_possible"] = self._as_output(scores, possible, prob.shape)
            d[f"{key}_tumor_score"] = max((c.score for c in found), default=0.0)
            d[f"{key}_components"] = [{"bbox": c.bbox, "area": c.area, "confidence": c.score} for c in kept]
            d[f"{key}_possible_components"] = [
                {"bbox": c.bbox, "area": c.area, "confidence": c.score} for c in possible
            ]
            d[f"{key}_verdict"] = verdict_of(kept, possible)
        return d

    def _as_output(self, scores: Any, kept: list, shape: tuple[int, int]) -> Any:
        mask = np.zeros((1, *shape), dtype=np.float32)
        for comp in kept:
            comp = comp.with_holes_filled() if self.fill_holes else comp  # within its box: cheap at any size
            x, y, w, h = (int(v) for v in comp.bbox)
            mask[0, y : y + h, x : x + w][comp.pixels] = 1.0
        out = torch.from_numpy(mask)
        return (
            MetaTensor(out, meta=dict(getattr(scores, "meta", {}) or {})) if isinstance(scores, torch.Tensor) else out
        )


class RandTumorCropd(RandomizableTransform, MapTransform):
    """Crop a training slice to a square around one of its tumor boxes, at native resolution, for the cascade.

    The box is drawn at random from the label's first channel (a box instance map from
    :class:`CocoAnnotationsToBoxMapd`, ids ``1..K``). The square's side is a random ``context``
    times the box's longer side (at least ``min_side``), its centre shifted by up to
    ``max_shift`` of the side, so the outline network learns tumors at the scale and the
    imperfect centring of the crops :class:`RefineTumorOutlined` gives it. A slice without a box
    gets a random square of a third to all of its shorter side. Every key is cropped to the same
    square (zero outside the slice) and resized to ``spatial_size``.

    Args:
        keys: channel-first keys to crop, the label among them.
        label_key: the key holding the box instance map in channel 0.
        spatial_size: the crops' side after resizing.
        context_range: the range of ``context`` (see :func:`~scripts.tumor_crops.context_square`).
        max_shift: the largest centre shift, as a fraction of the side.
        min_side: the smallest square side in native pixels.
        mode: interpolation per key, ``"bilinear"`` or ``"nearest"`` (labels).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_key: str = "label",
        spatial_size: int = 128,
        context_range: tuple[float, float] = (1.5, 3.0),
        max_shift: float = 0.15,
        min_side: int = 48,
        mode: str | tuple[str, ...] = ("bilinear", "nearest"),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        lo, hi = (float(v) for v in context_range)
        if not 0 < lo <= hi:
            raise ValueError(f"context_range: expected 0 < low <= high, got {context_range!r}")
        self.label_key = label_key
        self.spatial_size = int(spatial_size[0] if isinstance(spatial_size, (list, tuple)) else spatial_size)
        self.context_range = (lo, hi)
        self.max_shift = float(max_shift)
        self.min_side = int(min_side)
        self.mode = (mode,) * len(self.keys) if isinstance(mode, str) else tuple(mode)

    def _square(self, instances: np.ndarray) -> tuple[int, int, int]:
        height, width = instances.shape
        ids = np.unique(instances[instances > 0])
        if ids.size == 0:
            side = int(self.R.uniform(1 / 3, 1.0) * min(height, width))
            return int(self.R.randint(0, width - side + 1)), int(self.R.randint(0, height - side + 1)), side
        rows, cols = np.nonzero(instances == self.R.choice(ids))
        bbox = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        shift = tuple(self.R.uniform(-self.max_shift, self.max_shift, size=2))
        return context_square(bbox, self.R.uniform(*self.context_range), self.min_side, shift)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.label_key]
        instances = np.asarray(label[0].detach().cpu() if isinstance(label, torch.Tensor) else label[0])
        x0, y0, side = self._square(instances)
        for key, mode in zip(self.key_iterator(d), self.mode):
            img = d[key]
            out = crop_square(torch.as_tensor(img), x0, y0, side, self.spatial_size, mode)
            d[key] = MetaTensor(out, meta=dict(getattr(img, "meta", {}) or {})) if isinstance(img, MetaTensor) else out
        return d


class RefineTumorOutlined(MapTransform):
    """The cascade's second stage: outline each found tumor again on a native-resolution crop.

    Runs after :class:`TumorProbabilityToMaskd`, which decides whether and where there is a
    tumor (its components and the operating point). For each kept component, a square of
    ``context`` times its longer side is cut from the full-size slice (``image_key``, scaled to
    0..1 by its own 0.5-99.5 percentiles as the first stage's input is), resized to
    ``spatial_size`` and segmented by the outline ``network``; the tumor probabilities are
    pasted back and thresholded. The refined component that overlaps the first stage's most is
    kept, holes filled; where the crop finds nothing, the first stage's outline stays. The
    tumor score and each component's confidence stay the first stage's, so the operating point
    means the same with and without the cascade.

    Args:
        keys: the mask keys written by :class:`TumorProbabilityToMaskd` (with ``<key>_components``).
        image_key: the full-size grey slice, channel-first (1, H, W).
        network: the outline network, trained on :class:`RandTumorCropd` crops.
        spatial_size: the network's input side.
        context: the crop's side as a multiple of the component's longer side.
        min_side: the smallest crop side in native pixels.
        threshold: tumor probability at or above which a refined pixel is tumor.
        fill_holes: fill the refined outline's holes.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image_native",
        network: torch.nn.Module | None = None,
        spatial_size: int | Sequence[int] = 128,
        context: float = 2.0,
        min_side: int = 48,
        threshold: float = 0.3,
        fill_holes: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if network is None:
            raise ValueError("network: the cascade needs its outline network")
        if not 0.0 < number(threshold, "threshold") < 1.0:
            raise ValueError(f"threshold: must be a tumor probability in (0, 1), got {threshold!r}")
        self.image_key = image_key
        self.network = network.eval()
        self.spatial_size = int(spatial_size[0] if isinstance(spatial_size, Sequence) else spatial_size)
        self.context = float(context)
        self.min_side = int(min_side)
        self.threshold = float(threshold)
        self.fill_holes = switch(fill_holes, "fill_holes")

    @staticmethod
    def _scaled(image: Any) -> torch.Tensor:
        """The slice scaled to 0..1 by its 0.5 and 99.5 percentiles, clipped (as training scaled it)."""
        arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
        if not np.ptp(arr) > 0:
            return torch.zeros(arr.shape, dtype=torch.float32)  # a constant slice: nothing to see
        # a plain tensor: the outline network's ops then skip MetaTensor's metadata bookkeeping
        return convert_to_tensor(_PERCENTILE_SCALING(arr), dtype=torch.float32, track_meta=False)

    def _refined_probability(self, image: torch.Tensor, components: Sequence[Mapping[str, Any]]) -> np.ndarray:
        squares = [context_square(c["bbox"], self.context, self.min_side) for c in components]
        crops = torch.stack([crop_square(image, x0, y0, side, self.spatial_size) for x0, y0, side in squares])
        device = next(self.network.parameters()).device
        with torch.inference_mode():
            prob = torch.softmax(self.network(crops.to(device)).float(), dim=1)[:, 1:].cpu()
        refined = np.zeros(image.shape[1:], dtype=np.float32)
        for patch, (x0, y0, side) in zip(prob, squares):
            paste_square(refined, patch, x0, y0, side)
        return refined

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            components = d.get(f"{key}_components") or []
            if not components:
                continue
            refined = self._refined_probability(self._scaled(d[self.image_key]), components)
            first = np.asarray(d[key][0].detach().cpu() if isinstance(d[key], torch.Tensor) else d[key][0]) > 0
            if refined.shape != first.shape:
                raise ValueError(f"{self.image_key}: slice is {refined.shape}, the mask {first.shape}")
            candidates = components_to_boxes(refined >= self.threshold, refined)
            overlaps = [int((c.full_mask(*first.shape) & first).sum()) for c in candidates]
            if not candidates or max(overlaps) == 0:
                continue  # the crop sees no tumor where the first stage did: keep the first outline
            best = candidates[int(np.argmax(overlaps))]
            best = best.with_holes_filled() if self.fill_holes else best  # within its box: cheap
            mask = torch.from_numpy(best.full_mask(*first.shape)[None].astype(np.float32))
            pred = d[key]
            d[key] = (
                MetaTensor(mask, meta=dict(getattr(pred, "meta", {}) or {})) if isinstance(pred, MetaTensor) else mask
            )
            confidence = max(c["confidence"] for c in components)
            d[f"{key}_components"] = [{"bbox": best.bbox, "area": best.area, "confidence": confidence}]
        return d


class SaveMaskd(MapTransform):
    """Write each predicted mask next to nothing else: ``output_dir/<input stem><ext>``.

    The mask is the label map (:func:`~scripts.verdict.label_map`) of the tumor mask and, when
    the record has one, ``<key>_possible``: PNG files hold 255 for the tumor and 128 for a
    possible tumor (:data:`~scripts.verdict.PNG_VALUES`), NIfTI files hold the labels 1 and 2.
    Files are written to a temporary name and renamed, so a crash never leaves a half-written mask.

    Args:
        keys: prediction keys.
        output_dir: the folder to write into (created if missing).
        output_ext: ``.png`` (default), ``.nii.gz`` or ``.nii``.
        source_key: the key whose metadata ``filename_or_obj`` names the input image.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./eval",
        output_ext: str = ".png",
        source_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = os.fspath(output_dir)
        self.output_ext = output_ext
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d.get(self.source_key)
        meta = getattr(source, "meta", None) or d.get(f"{self.source_key}_meta_dict") or {}
        filename = meta.get("filename_or_obj")
        if not filename:
            raise ValueError(f"SaveMaskd: {self.source_key} has no filename_or_obj metadata to name the mask after")
        for key in self.key_iterator(d):
            labels = label_map(
                _plane(d[key]), None if d.get(f"{key}_possible") is None else _plane(d[f"{key}_possible"])
            )
            path = mask_output_path(filename, self.output_dir, self.output_ext)
            # PNG: the table's grey values; other formats: the labels themselves
            write_mask(png_mask(labels) if path.lower().endswith(".png") else labels, path, scale=1)
        return d


def _plane(pred: Any) -> np.ndarray:
    """A (H, W) array from a (1, H, W) or (H, W) tensor or array."""
    arr = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred)
    return arr[0] if arr.ndim == 3 else arr


def _name(img: Any, key: Hashable) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or key)
