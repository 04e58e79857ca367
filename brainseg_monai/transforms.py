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
from monai.transforms import AsDiscrete, FillHoles, KeepLargestConnectedComponent, MapTransform

from brainseg_monai.coco import rasterize_annotations
from brainseg_monai.io import mask_output_path, write_mask

__all__ = ["CocoAnnotationsToBoxMapd", "CocoAnnotationsToMaskd", "SaveMaskd", "ToGrayscaled", "TumorProbabilityToMaskd"]


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

    Thresholds the tumor channel, then optionally keeps its largest connected component and
    fills its holes (MONAI's transforms). The inference and evaluate workflows both use it,
    so what evaluate measures is what inference writes.

    Args:
        keys: prediction keys, softmax scores with the tumor in channel 1.
        threshold: tumor probability at or above which a pixel is tumor, in (0, 1).
        keep_largest_component: keep only the largest 8-connected tumor region.
        fill_holes: fill the tumor regions' holes.
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        ValueError: ``threshold`` is not in (0, 1).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        threshold: float = 0.5,
        keep_largest_component: bool = True,
        fill_holes: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold: must be a tumor probability in (0, 1), got {threshold!r}")
        self.threshold = AsDiscrete(threshold=float(threshold))
        # the optional steps, None when switched off
        self.largest = (
            KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False) if keep_largest_component else None
        )
        self.fill = FillHoles(applied_labels=[1]) if fill_holes else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            if scores.ndim != 3 or scores.shape[0] != 2:
                raise ValueError(f"{key}: expected (2, H, W) softmax scores, got shape {tuple(scores.shape)}")
            mask = self.threshold(scores[1:])
            for step in (self.largest, self.fill):
                mask = step(mask) if step else mask
            d[key] = mask
        return d


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
