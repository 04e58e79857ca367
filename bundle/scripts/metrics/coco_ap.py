"""COCO results and AP for boxes and masks, computed with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from ..coco import build_coco, load_coco_json
from ..components import _as_binary, components_to_boxes
from .detection import annotation_box

#: The single category of exported results and of the ground truth that AP is computed on.
TUMOR_CATEGORY_ID = 1
_AP_KEYS = ("AP", "AP50", "AP75")


def to_coco_results(
    image_id: int, mask: np.ndarray, prob: np.ndarray | None = None, category_id: int = TUMOR_CATEGORY_ID
) -> list[dict[str, Any]]:
    """A prediction in COCO results format, one detection per connected component.

    Args:
        image_id: the COCO image id.
        mask: predicted (H, W) mask, foreground > 0.
        prob: optional (H, W) tumor probability, for the scores (:func:`components_to_boxes`).
        category_id: the category of every detection.

    Returns:
        Dicts with ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score`` and
        ``segmentation`` (compressed RLE with ``counts`` as str), JSON-serializable.
    """
    from pycocotools import mask as mask_utils

    binary = _as_binary(mask, "mask")
    height, width = binary.shape
    results = []
    for comp in components_to_boxes(binary, prob):
        rle = mask_utils.encode(np.asfortranarray(comp.full_mask(height, width), dtype=np.uint8))
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": comp.bbox,
                "score": comp.score,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            }
        )
    return results


def _single_class_gt(data: Mapping[str, Any], category_ids: Collection[int] | None) -> dict[str, Any]:
    """A deep copy of COCO ground truth with its tumor annotations in one category.

    Annotations of ``category_ids`` (all when ``None``) get :data:`TUMOR_CATEGORY_ID`, others
    are dropped; a missing ``area`` or ``iscrowd`` is filled in as COCOeval needs them.
    """
    gt = copy.deepcopy(dict(data))
    keep = None if category_ids is None else {int(c) for c in category_ids}
    annotations = []
    for k, ann in enumerate(gt.get("annotations", [])):
        if keep is not None and int(ann["category_id"]) not in keep:
            continue
        ann["category_id"] = TUMOR_CATEGORY_ID
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann and ann.get("bbox"):
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        annotations.append(ann)
    gt["annotations"] = annotations
    gt["categories"] = [{"id": TUMOR_CATEGORY_ID, "name": "Tumor", "supercategory": "none"}]
    return gt


def coco_ap(
    gt: Mapping[str, Any] | str | os.PathLike,
    results: Sequence[Mapping[str, Any]],
    iou_type: str = "bbox",
    category_ids: Collection[int] | None = None,
) -> dict[str, float | None]:
    """Single-class COCO average precision with pycocotools' ``COCOeval``.

    Every ground-truth category (or those in ``category_ids``) and every result count as one
    class, Tumor: the dataset's categories 1 and 2 are undocumented sub-labels of it. Neither
    ``gt`` nor ``results`` is modified (pycocotools writes into results; a copy is evaluated).

    With ``iou_type="segm"`` the ground-truth masks are this dataset's boxes, so AP measures
    how box-like a mask is: a perfect tumor outline covers about 55% of its loose box, a mask
    IoU of about 0.55, which passes the 0.5 threshold but none from 0.6 up. Segm AP (averaged
    over IoU 0.5:0.95) is therefore capped near 0.1-0.2 for a perfect outline; AP50 is the
    meaningful segm figure, and true-outline Dice is the measure of outline quality.

    Args:
        gt: COCO ground truth, a dict or the path of an annotation file.
        results: detections in COCO results format (:func:`to_coco_results`).
        iou_type: ``"bbox"`` or ``"segm"``.
        category_ids: ground-truth categories that are tumors (default: all).

    Returns:
        ``{"AP", "AP50", "AP75"}``: AP at IoU 0.5:0.95, 0.5 and 0.75 (all areas, 100 detections).
        0.0 each without any result; ``None`` each when the ground truth has no annotation.

    Raises:
        ValueError: unknown ``iou_type``, or a result names an image the ground truth lacks.
    """
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    data = load_coco_json(gt) if isinstance(gt, (str, os.PathLike)) else gt
    single = _single_class_gt(data, category_ids)
    if not single["annotations"]:
        return dict.fromkeys(_AP_KEYS)
    if not results:
        return dict.fromkeys(_AP_KEYS, 0.0)
    known = {int(im["id"]) for im in single.get("images", [])}
    unknown = sorted({int(r["image_id"]) for r in results} - known)
    if unknown:
        raise ValueError(f"results name image ids the ground truth lacks: {unknown[:10]}")
    detections = [{**copy.deepcopy(dict(r)), "category_id": TUMOR_CATEGORY_ID} for r in results]
    coco_gt = build_coco(single)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: _ap_value(v) for key, v in zip(_AP_KEYS, evaluator.stats[:3])}


def _ap_value(value: float) -> float | None:
    """COCOeval writes -1 for "undefined"; report it as None."""
    return None if value < 0 else float(value)


def records_to_coco(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """COCO ground truth, one category, from datalist records (:func:`~scripts.coco.coco_to_datalist`).

    The records' annotations are already category-mapped, so this is the ground truth every
    other metric of :func:`evaluate_predictions` sees. An annotation without segmentation gets
    its box as polygon.
    """
    images, annotations = [], []
    for rec in records:
        label = rec["label"]
        height, width = int(label["height"]), int(label["width"])
        images.append(
            {"id": int(rec["image_id"]), "file_name": os.path.basename(rec["image"]), "height": height, "width": width}
        )
        for ann in label["annotations"]:
            x, y, w, h = annotation_box(ann, height, width)
            seg = ann.get("segmentation") or [[x, y, x + w, y, x + w, y + h, x, y + h]]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(rec["image_id"]),
                    "category_id": TUMOR_CATEGORY_ID,
                    "bbox": [x, y, w, h],
                    "segmentation": copy.deepcopy(seg),
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": TUMOR_CATEGORY_ID, "name": "Tumor", "supercategory": "none"}]
    return {"images": images, "annotations": annotations, "categories": categories}
