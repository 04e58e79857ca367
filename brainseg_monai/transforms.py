"""MONAI dictionary transforms for what is specific to COCO brain tumor data.

Everything else (loading, resizing, intensity, augmentation, inversion) is MONAI's own and
lives in the bundle's configs.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import FillHoles, MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from brainseg_monai.coco import rasterize_annotations
from brainseg_monai.components import components_to_boxes
from brainseg_monai.io import mask_output_path, write_mask
from brainseg_monai.tumor_free import remove_tumor

__all__ = [
    "CocoAnnotationsToBoxMapd",
    "CocoAnnotationsToMaskd",
    "RandTumorFreed",
    "SaveMaskd",
    "ToGrayscaled",
    "TumorProbabilityToMaskd",
]


class CocoAnnotationsToMaskd(MapTransform):
    """Replace a record's COCO annotations with a channel-first label mask (1, H, W).

    The value under each key is the ``label`` entry that
    :func:`brainseg_monai.coco.coco_to_datalist` writes:
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
            entry = d[key]
            if not isinstance(entry, Mapping) or "annotations" not in entry:
                raise ValueError(f"{key}: expected COCO annotations from coco_to_datalist, got {type(entry).__name__}")
            mask = rasterize_annotations(entry["annotations"], int(entry["height"]), int(entry["width"]))
            d[key] = MetaTensor(torch.from_numpy(mask[None]))
        return d


class CocoAnnotationsToBoxMapd(MapTransform):
    """Replace a record's COCO annotations with a box instance map (1, H, W), for box-supervised losses.

    Each annotation's box is drawn with its own id ``k = 1..K`` (0 is background), so the
    losses of :mod:`brainseg_monai.losses` find every box again as the extent of the pixels
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
            entry = d[key]
            if not isinstance(entry, Mapping) or "annotations" not in entry:
                raise ValueError(f"{key}: expected COCO annotations from coco_to_datalist, got {type(entry).__name__}")
            height, width = int(entry["height"]), int(entry["width"])
            boxes = [_annotation_box_mask(ann, height, width) for ann in entry["annotations"]]
            boxes = sorted((b for b in boxes if b.any()), key=lambda b: -int(b.sum()))
            instance_map = np.zeros((height, width), dtype=np.float32)
            for k, box in enumerate(boxes, start=1):
                instance_map[box] = k
            d[key] = MetaTensor(torch.from_numpy(instance_map[None]))
        return d


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
    """Make a channel-first image one channel: MRI slices are often stored as RGB(A) with R=G=B.

    1 channel: kept. 2 (grey + alpha): the grey channel. 3 or 4 (RGB, RGBA): the mean of R, G
    and B, alpha dropped. Anything else is refused with a message naming the image.

    Args:
        keys: image keys, channel-first.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3:
                raise ValueError(f"{_name(img, key)}: expected a 2D image, got array of shape {tuple(img.shape)}")
            channels = img.shape[0]
            if channels in (3, 4):
                img = (
                    img[:3].float().mean(dim=0, keepdim=True)
                    if isinstance(img, torch.Tensor)
                    else (np.asarray(img[:3], dtype=np.float32).mean(axis=0, keepdims=True))
                )
            elif channels == 2:
                img = img[:1]
            elif channels != 1:
                raise ValueError(f"{_name(img, key)}: expected 1, 3 or 4 channels (grey, RGB, RGBA), got {channels}")
            d[key] = img
        return d


class TumorProbabilityToMaskd(MapTransform):
    """The shipped post-processing: 2-channel softmax scores ``(2, H, W)`` to a 0/1 tumor mask ``(1, H, W)``.

    Thresholds the tumor channel into 8-connected components, each with a confidence (its mean
    tumor probability, :func:`~brainseg_monai.components.components_to_boxes`). Components less
    smaller than ``min_area_fraction`` of the image are dropped (specks on enhancing vessels and
    glands, not tumors), then those less confident than ``min_confidence``; of the rest,
    optionally only the largest is kept, and its holes filled. The slice's **tumor score** is
    the highest confidence of the components large enough to count (0 when there is none), so a
    tumor is reported exactly when the score reaches ``min_confidence``. Beside the mask, the
    record gets ``<key>_tumor_score`` (float) and ``<key>_components`` (a list of
    ``{"bbox": [x, y, w, h], "area": pixels, "confidence"}`` for the components kept, empty when
    no tumor is found). The inference and evaluate workflows both use it, so what evaluate
    measures is what inference writes.

    Args:
        keys: prediction keys, softmax scores with the tumor in channel 1.
        threshold: tumor probability at or above which a pixel is tumor, in (0, 1).
        keep_largest_component: keep only the largest confident component.
        fill_holes: fill the kept components' holes.
        min_confidence: the operating point: components below it are dropped, in [0, 1).
        min_area_fraction: components smaller than this fraction of the image are dropped, in [0, 1).
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        ValueError: ``threshold`` is not in (0, 1), ``min_confidence`` or ``min_area_fraction`` not in [0, 1).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        threshold: float = 0.5,
        keep_largest_component: bool = True,
        fill_holes: bool = False,
        min_confidence: float = 0.0,
        min_area_fraction: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold: must be a tumor probability in (0, 1), got {threshold!r}")
        if not 0.0 <= float(min_confidence) < 1.0:
            raise ValueError(f"min_confidence: must be a component confidence in [0, 1), got {min_confidence!r}")
        if not 0.0 <= float(min_area_fraction) < 1.0:
            raise ValueError(f"min_area_fraction: must be a fraction of the image in [0, 1), got {min_area_fraction!r}")
        self.threshold = float(threshold)
        self.min_area_fraction = float(min_area_fraction)
        self.keep_largest_component = bool(keep_largest_component)
        self.min_confidence = float(min_confidence)
        self.fill = FillHoles(applied_labels=[1]) if fill_holes else None

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
            if self.keep_largest_component and kept:
                kept = [max(kept, key=lambda c: c.area)]
            d[key] = self._as_output(scores, kept, prob.shape)
            d[f"{key}_tumor_score"] = max((c.score for c in found), default=0.0)
            d[f"{key}_components"] = [{"bbox": c.bbox, "area": c.area, "confidence": c.score} for c in kept]
        return d

    def _as_output(self, scores: Any, kept: list, shape: tuple[int, int]) -> Any:
        mask = np.zeros(shape, dtype=bool)
        for comp in kept:
            mask |= comp.full_mask(*shape)
        out = torch.from_numpy(mask[None].astype(np.float32))
        out = MetaTensor(out, meta=dict(getattr(scores, "meta", {}) or {})) if isinstance(scores, torch.Tensor) else out
        return self.fill(out) if self.fill is not None else out


class SaveMaskd(MapTransform):
    """Write each predicted mask next to nothing else: ``output_dir/<input stem><ext>``.

    The mask is the channel-first prediction after argmax (values 0/1); PNG files hold 0/255
    (``scale``), NIfTI files hold the label values. Files are written to a temporary name and
    renamed, so a crash never leaves a half-written mask.

    Args:
        keys: prediction keys.
        output_dir: the folder to write into (created if missing).
        output_ext: ``.png`` (default), ``.nii.gz`` or ``.nii``.
        source_key: the key whose metadata ``filename_or_obj`` names the input image.
        scale: the PNG value of a foreground pixel.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./eval",
        output_ext: str = ".png",
        source_key: str = "image",
        scale: int = 255,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = os.fspath(output_dir)
        self.output_ext = output_ext
        self.source_key = source_key
        self.scale = scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d.get(self.source_key)
        meta = getattr(source, "meta", None) or d.get(f"{self.source_key}_meta_dict") or {}
        filename = meta.get("filename_or_obj")
        if not filename:
            raise ValueError(f"SaveMaskd: {self.source_key} has no filename_or_obj metadata to name the mask after")
        for key in self.key_iterator(d):
            pred = d[key]
            mask = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred)
            mask = mask[0] if mask.ndim == 3 else mask
            write_mask(mask, mask_output_path(filename, self.output_dir, self.output_ext), scale=self.scale)
        return d


def _name(img: Any, key: Hashable) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or key)
