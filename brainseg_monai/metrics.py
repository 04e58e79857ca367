"""Evaluation of predicted tumor masks against COCO ground truth whose "masks" are boxes.

The dataset's COCO segmentations are loose axis-aligned boxes (about 1.8x the area of the
tumor's own bounding box), so pixel Dice against them rewards box-shaped predictions and
punishes a faithful tumor outline. This module therefore reports several views side by side:

* pixel overlap with the rasterized COCO masks (:func:`dice_iou`, MONAI's metric functions);
* box metrics on the connected components of a prediction (:func:`components_to_boxes`):
  box IoU, greedy one-to-one detection at IoU >= 0.5 (:func:`detection_counts`);
* box-agnostic detection: a component counts when most of its pixels lie inside a COCO box
  (:func:`containment_counts`), with how much of each box is filled (:func:`fill_ratios`) and
  how much of the prediction lies outside every box (:func:`outside_fraction`);
* Dice against true tumor outlines (PNG 0/255) where they exist (:func:`outline_dice`);
* COCO AP for boxes and masks with pycocotools (:func:`to_coco_results`, :func:`coco_ap`).

:func:`evaluate_predictions` turns predictions for a datalist into per-image rows and a
summary; :func:`evaluate_split` runs a predictor over a COCO split and writes everything.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import statistics
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from scripts.coco import build_coco, coco_to_datalist, load_coco_json, rasterize_annotations
from scripts.components import Component, _as_binary, _check_same_shape, components_to_boxes
from scripts.io import atomic_output, image_stem, mask_output_path, write_mask

__all__ = [
    "CONTAINMENT_MIN_INSIDE",
    "DETECTION_IOU",
    "GALLERY_FILE",
    "MASKS_DIR",
    "PER_IMAGE_FILE",
    "RESULTS_FILE",
    "ROW_FIELDS",
    "SUMMARY_FILE",
    "TUMOR_CATEGORY_ID",
    "Box",
    "Component",
    "DetectionCounts",
    "Evaluation",
    "annotation_box",
    "annotation_masks",
    "best_match_box_iou",
    "box_iou",
    "box_masks",
    "coco_ap",
    "components_to_boxes",
    "containment_counts",
    "detection_counts",
    "dice_iou",
    "evaluate_image",
    "evaluate_predictions",
    "evaluate_split",
    "fill_ratios",
    "greedy_match",
    "load_outline",
    "outline_dice",
    "outside_fraction",
    "records_to_coco",
    "summarize",
    "to_coco_results",
    "union_box_iou",
]

#: A predicted component box detects a COCO box when their IoU is at least this.
DETECTION_IOU = 0.5
#: A predicted component detects a COCO box when at least this fraction of its pixels lies inside it.
CONTAINMENT_MIN_INSIDE = 0.5
#: The single category of exported results and of the ground truth that AP is computed on.
TUMOR_CATEGORY_ID = 1
PER_IMAGE_FILE = "metrics_per_image.csv"
SUMMARY_FILE = "metrics_summary.json"
RESULTS_FILE = "coco_results.json"
GALLERY_FILE = "gallery.png"
MASKS_DIR = "masks"
#: Columns of :data:`PER_IMAGE_FILE`, the keys of a row of :func:`evaluate_image`.
ROW_FIELDS = (
    "file_name",
    "image_id",
    "dice",
    "iou",
    "box_iou",
    "box_iou_best_match",
    "n_gt",
    "n_pred",
    "tp",
    "fp",
    "fn",
    "containment_tp",
    "containment_fp",
    "containment_fn",
    "fill_ratio",
    "outside_fraction",
    "outline_dice",
    "tumor_found",
    "tumor_score",
    "input_unusual",
)

# Float rounding must not turn an IoU of exactly the threshold into a miss.
_TOLERANCE = 1e-9
_AP_KEYS = ("AP", "AP50", "AP75")

#: A COCO box ``[x, y, width, height]`` in pixel-edge coordinates (pixel ``i`` spans ``[i, i + 1)``).
Box = Sequence[float]


@dataclass(frozen=True)
class DetectionCounts:
    """True positives, false positives and false negatives of a detection rule.

    The ratios follow one convention for empty denominators: with nothing to find and nothing
    found (all counts 0) precision, recall and F1 are 1.0; otherwise an empty denominator gives 0.0.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN), the harmonic mean of precision and recall."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def _ratio(self, num: int, den: int) -> float:
        if den:
            return num / den
        return 1.0 if self.tp == self.fp == self.fn == 0 else 0.0


@dataclass
class Evaluation:
    """What :func:`evaluate_predictions` returns.

    Args:
        rows: one dict per image with the keys :data:`ROW_FIELDS`.
        summary: the split's figures, see :func:`summarize`.
        coco_results: every predicted component in COCO results format (:func:`to_coco_results`).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    coco_results: list[dict[str, Any]]


# --------------------------------------------------------------------------- masks and pixels


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """(1, 2, H, W) float one-hot of a boolean mask: channel 0 background, 1 tumor."""
    fg = torch.from_numpy(np.ascontiguousarray(mask))
    return torch.stack([~fg, fg])[None].float()


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of the tumor class with MONAI's ``compute_dice`` and ``compute_iou``.

    Convention for empty masks (MONAI's ``ignore_empty=False``): both empty gives Dice 1.0 and
    IoU 1.0, a correct true negative on a tumor-free image; exactly one empty gives 0.0.

    Args:
        pred: predicted (H, W) mask, foreground > 0.
        gt: reference (H, W) mask, foreground > 0.

    Returns:
        ``(dice, iou)``.

    Raises:
        ValueError: a mask is not 2D or the shapes differ.
    """
    p, g = _as_binary(pred, "pred"), _as_binary(gt, "gt")
    _check_same_shape(p, g, "dice_iou")
    y_pred, y = _one_hot(p), _one_hot(g)
    dice = compute_dice(y_pred, y, include_background=False, ignore_empty=False)
    iou = compute_iou(y_pred, y, include_background=False, ignore_empty=False)
    return float(dice.item()), float(iou.item())


def load_outline(path: str | os.PathLike) -> np.ndarray:
    """A true-outline PNG (0/255) as a boolean (H, W) mask.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    from PIL import Image

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: outline mask not found")
    with Image.open(p) as im:
        return np.asarray(im.convert("L")) > 0


def outline_dice(pred: np.ndarray, outline: np.ndarray | str | os.PathLike) -> float:
    """Dice of a prediction against a true tumor outline.

    Args:
        pred: predicted (H, W) mask, foreground > 0.
        outline: the true mask as an array or a PNG path (0/255, foreground > 0).

    Returns:
        The Dice, with the empty/empty convention of :func:`dice_iou`.

    Raises:
        FileNotFoundError: no file at the ``outline`` path.
        ValueError: the shapes differ.
    """
    if not isinstance(outline, (str, os.PathLike)):
        return dice_iou(pred, outline)[0]
    truth = load_outline(outline)
    if truth.shape != np.shape(pred):
        raise ValueError(f"{os.fspath(outline)}: outline is {truth.shape}, the prediction {np.shape(pred)}")
    return dice_iou(pred, truth)[0]


# --------------------------------------------------------------------------- components and boxes


def annotation_box(annotation: Mapping[str, Any], height: int, width: int) -> list[float]:
    """The COCO box of an annotation: its ``bbox``, or the box around its rasterized segmentation.

    Raises:
        ValueError: the annotation has neither a bbox nor a non-empty segmentation.
    """
    bbox = annotation.get("bbox")
    if bbox:
        return [float(v) for v in bbox]
    drawn = rasterize_annotations([annotation], height, width) > 0
    if not drawn.any():
        raise ValueError("annotation has neither a bbox nor a non-empty segmentation")
    rows, cols = np.nonzero(drawn)
    x, y = int(cols.min()), int(rows.min())
    return [float(x), float(y), float(cols.max() - x + 1), float(rows.max() - y + 1)]


def box_masks(boxes: Sequence[Box], height: int, width: int) -> list[np.ndarray]:
    """Each box rasterized with pycocotools as the COCO masks are, one boolean (H, W) mask each."""
    return [rasterize_annotations([{"bbox": list(box)}], height, width) > 0 for box in boxes]


def annotation_masks(annotations: Sequence[Mapping[str, Any]], height: int, width: int) -> list[np.ndarray]:
    """The region of each annotation, one boolean (H, W) mask each: its segmentation, else its bbox.

    On this dataset every segmentation is its box (to within half a pixel), so these are the
    rasterized COCO boxes, pixel for pixel the ground truth that :func:`dice_iou` sees: a
    prediction equal to the COCO mask fills its boxes exactly and has nothing outside them.
    """
    return [rasterize_annotations([ann], height, width) > 0 for ann in annotations]


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``[x, y, w, h]`` boxes in continuous coordinates (0.0 when both are empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _box_iou_matrix(pred_boxes: Sequence[Box], gt_boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[box_iou(p, g) for g in gt_boxes] for p in pred_boxes], dtype=np.float64).reshape(
        len(pred_boxes), len(gt_boxes)
    )


def greedy_match(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one matching of predictions (rows) to references (columns), best score first.

    Args:
        scores: (n_pred, n_gt) matrix, higher is better (IoU, fraction inside...).
        threshold: pairs scoring below it (beyond float rounding) are never matched.

    Returns:
        The matched ``(pred_index, gt_index)`` pairs.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = sorted(np.ndindex(scores.shape), key=lambda ij: (-scores[ij], ij))
    used_pred: set[int] = set()
    used_gt: set[int] = set()
    pairs = []
    for i, j in order:
        if scores[i, j] < threshold - _TOLERANCE:
            break
        if i not in used_pred and j not in used_gt:
            pairs.append((i, j))
            used_pred.add(i)
            used_gt.add(j)
    return pairs


def detection_counts(
    pred_boxes: Sequence[Box], gt_boxes: Sequence[Box], iou_threshold: float = DETECTION_IOU
) -> DetectionCounts:
    """TP/FP/FN of predicted boxes against COCO boxes, greedy one-to-one matching by box IoU.

    Args:
        pred_boxes: boxes of the predicted components.
        gt_boxes: the image's COCO boxes.
        iou_threshold: a pair counts when its IoU is at least this (an IoU of exactly 0.5 is a match).

    Returns:
        The counts: TP matched pairs, FP unmatched predictions, FN unmatched COCO boxes.
    """
    tp = len(greedy_match(_box_iou_matrix(pred_boxes, gt_boxes), iou_threshold))
    return DetectionCounts(tp=tp, fp=len(pred_boxes) - tp, fn=len(gt_boxes) - tp)


def union_box_iou(pred_boxes: Sequence[Box], gt_box_masks: Sequence[np.ndarray], height: int, width: int) -> float:
    """Pixel IoU between the union of the predicted boxes and the union of the COCO boxes.

    This is the ``box_iou`` of a per-image row: it asks whether the prediction's boxes cover
    the annotated region, however the tumor is split into components. No box on either side:
    1.0 (a correct true negative); boxes on one side only: 0.0.

    Args:
        pred_boxes: boxes of the predicted components.
        gt_box_masks: the image's COCO boxes rasterized (:func:`annotation_masks`).
        height: image height.
        width: image width.
    """
    pred = np.zeros((height, width), dtype=bool)
    for m in box_masks(pred_boxes, height, width):
        pred |= m
    gt = np.zeros((height, width), dtype=bool)
    for m in gt_box_masks:
        gt |= m
    return dice_iou(pred, gt)[1]


def best_match_box_iou(pred_boxes: Sequence[Box], gt_boxes: Sequence[Box]) -> float:
    """Mean over COCO boxes of the best IoU any predicted box reaches with it (0.0 for a missed box).

    Predicted boxes may serve several COCO boxes and unmatched predictions are not penalised
    here (false positives are counted by :func:`detection_counts`). No COCO box: 1.0 without
    predictions, 0.0 with some.
    """
    if not gt_boxes:
        return 0.0 if pred_boxes else 1.0
    if not pred_boxes:
        return 0.0
    return float(_box_iou_matrix(pred_boxes, gt_boxes).max(axis=0).mean())


def containment_counts(
    components: Sequence[Component], gt_box_masks: Sequence[np.ndarray], min_inside: float = CONTAINMENT_MIN_INSIDE
) -> DetectionCounts:
    """TP/FP/FN where a component detects a COCO box when most of its pixels lie inside it.

    A component may match a box when at least ``min_inside`` of its pixels lie inside that box.
    Matching is one-to-one, greedy by that fraction: each box is matched at most once, so a
    second fragment inside an already matched box is a false positive, and a box is found
    (not a false negative) when some component matched it. Unlike :func:`detection_counts`
    this does not ask the prediction to have the box's shape: a tight tumor outline inside a
    loose box counts.

    Args:
        components: the predicted components (:func:`components_to_boxes`).
        gt_box_masks: the image's COCO boxes rasterized (:func:`annotation_masks`).
        min_inside: the smallest fraction of a component's pixels inside a box.

    Returns:
        The counts.
    """
    inside = np.zeros((len(components), len(gt_box_masks)), dtype=np.float64)
    for i, comp in enumerate(components):
        x, y, w, h = (int(v) for v in comp.bbox)
        for j, box in enumerate(gt_box_masks):
            inside[i, j] = np.count_nonzero(box[y : y + h, x : x + w] & comp.pixels) / comp.area
    tp = len(greedy_match(inside, min_inside))
    return DetectionCounts(tp=tp, fp=len(components) - tp, fn=len(gt_box_masks) - tp)


def fill_ratios(pred: np.ndarray, gt_box_masks: Sequence[np.ndarray]) -> list[float]:
    """For each COCO box, the fraction of its pixels that the prediction covers.

    A prediction equal to the box gives 1.0; a perfect tumor outline gives about 0.55 on this
    dataset, whose boxes are loose.
    """
    p = _as_binary(pred, "pred")
    return [float(np.count_nonzero(p & box) / max(1, np.count_nonzero(box))) for box in gt_box_masks]


def outside_fraction(pred: np.ndarray, gt_box_masks: Sequence[np.ndarray]) -> float | None:
    """The fraction of predicted pixels outside every COCO box; ``None`` for an empty prediction."""
    p = _as_binary(pred, "pred")
    total = np.count_nonzero(p)
    if total == 0:
        return None
    inside = np.zeros_like(p)
    for box in gt_box_masks:
        inside |= box
    return float(np.count_nonzero(p & ~inside) / total)


# --------------------------------------------------------------------------- COCO results and AP


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


# --------------------------------------------------------------------------- per image and per split


def evaluate_image(
    record: Mapping[str, Any],
    mask: np.ndarray,
    prob: np.ndarray | None = None,
    outline: np.ndarray | str | os.PathLike | None = None,
    tumor_score: float | None = None,
    input_unusual: bool | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All per-image metrics of one prediction.

    Args:
        record: a datalist record (:func:`~scripts.coco.coco_to_datalist`).
        mask: predicted (H, W) mask at the image's size, foreground > 0.
        prob: optional (H, W) tumor probability, for the result scores.
        outline: optional true tumor mask (array or PNG path) for ``outline_dice``.
        tumor_score: the post-processing's tumor score of the image
            (:class:`~scripts.transforms.TumorProbabilityToMaskd`); default: the highest
            score of the mask's components (0 for an empty mask).
        input_unusual: the input check's flag (:mod:`scripts.input_check`), None if not run.

    Returns:
        ``(row, results)``: the row has the keys :data:`ROW_FIELDS` (see :func:`summarize` for
        their meaning); the results are the prediction in COCO results format.

    Raises:
        ValueError: the mask's shape is not the record's (height, width).
    """
    label = record["label"]
    height, width = int(label["height"]), int(label["width"])
    pred = _as_binary(mask, "prediction")
    if pred.shape != (height, width):
        raise ValueError(f"{record['image']}: prediction is {pred.shape}, the image is {(height, width)}")
    annotations = label["annotations"]
    gt = rasterize_annotations(annotations, height, width) > 0
    gt_boxes = [annotation_box(ann, height, width) for ann in annotations]
    gt_box_masks = annotation_masks(annotations, height, width)
    components = components_to_boxes(pred, prob)
    pred_boxes = [c.bbox for c in components]
    dice, iou = dice_iou(pred, gt)
    detection = detection_counts(pred_boxes, gt_boxes)
    containment = containment_counts(components, gt_box_masks)
    fills = fill_ratios(pred, gt_box_masks)
    row = {
        "file_name": os.path.basename(record["image"]),
        "image_id": int(record["image_id"]),
        "dice": dice,
        "iou": iou,
        "box_iou": union_box_iou(pred_boxes, gt_box_masks, height, width),
        "box_iou_best_match": best_match_box_iou(pred_boxes, gt_boxes),
        "n_gt": len(gt_boxes),
        "n_pred": len(components),
        "tp": detection.tp,
        "fp": detection.fp,
        "fn": detection.fn,
        "containment_tp": containment.tp,
        "containment_fp": containment.fp,
        "containment_fn": containment.fn,
        "fill_ratio": float(np.mean(fills)) if fills else None,
        "outside_fraction": outside_fraction(pred, gt_box_masks),
        "outline_dice": None if outline is None else outline_dice(pred, outline),
        "tumor_found": bool(components),
        "tumor_score": round(
            float(tumor_score) if tumor_score is not None else max((c.score for c in components), default=0.0), 4
        ),
        "input_unusual": input_unusual,
    }
    return row, to_coco_results(record["image_id"], pred, prob)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(statistics.fmean(kept)) if kept else None


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(statistics.median(kept)) if kept else None


def _counts(rows: Sequence[Mapping[str, Any]], prefix: str) -> DetectionCounts:
    return sum((DetectionCounts(r[f"{prefix}tp"], r[f"{prefix}fp"], r[f"{prefix}fn"]) for r in rows), DetectionCounts())


def summarize(
    rows: Sequence[Mapping[str, Any]],
    gt_coco: Mapping[str, Any] | None = None,
    coco_results: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The split's figures from per-image rows (and COCO AP when the ground truth is given).

    Keys (``None`` where a figure has no image to average over):

    * ``n_images``, ``n_tumor_images`` (with a COCO box), ``n_tumor_free_images``,
      ``n_gt_boxes``, ``n_pred_components``;
    * ``dice_mean``, ``dice_median``, ``iou_mean``, ``iou_median``: pixel overlap with the COCO
      masks over all images, a tumor-free image with an empty prediction counting 1.0;
      ``dice_mean_tumor_images``: over images with a box only (MONAI's ``MeanDice`` default,
      comparable to the training log's ``val_mean_dice``);
    * ``box_iou_mean``, ``box_iou_median``: the union-of-boxes IoU (:func:`union_box_iou`);
      ``box_iou_best_match_mean``, ``box_iou_best_match_median``: :func:`best_match_box_iou`;
    * ``detection_iou_threshold``, ``detection_tp``/``fp``/``fn``/``precision``/``recall``/``f1``:
      component boxes matched to COCO boxes at IoU >= 0.5 (:func:`detection_counts`), summed
      over the split;
    * ``containment_min_inside``, ``containment_tp``/``fp``/``fn``/``precision``/``recall``/``f1``:
      :func:`containment_counts`, summed over the split;
    * ``fill_ratio_mean``, ``fill_ratio_median``: over images with a box, of each image's mean
      box fill ratio; ``outside_fraction_mean``, ``outside_fraction_median``: over images with
      a non-empty prediction;
    * ``n_outlines``, ``outline_dice_mean``, ``outline_dice_median``: over images with a true outline;
    * ``tumor_free_fp_components``: predicted components on images without any COCO box, and
      ``tumor_free_images_with_fp``: how many such images have one; ``tumor_free_fp_rate``:
      their fraction of the tumor-free images;
    * ``n_images_tumor_found``, ``n_images_no_tumor_found``: images whose prediction has a
      component or none; ``components_per_tumor_image_mean``: predicted components per image
      with a box; ``n_images_input_unusual``: inputs flagged unlike the training data;
    * ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75``, ``segm_AP``, ``segm_AP50``, ``segm_AP75``:
      :func:`coco_ap` (only when ``gt_coco`` is given).

    Args:
        rows: per-image rows (:func:`evaluate_image`).
        gt_coco: single-class ground truth (:func:`records_to_coco`) for AP; ``None`` skips AP.
        coco_results: all images' detections (:func:`to_coco_results`).

    Returns:
        The summary, JSON-serializable.
    """
    tumor = [r for r in rows if r["n_gt"] > 0]
    tumor_free = [r for r in rows if r["n_gt"] == 0]
    detection, containment = _counts(rows, ""), _counts(rows, "containment_")
    summary: dict[str, Any] = {
        "n_images": len(rows),
        "n_tumor_images": len(tumor),
        "n_tumor_free_images": len(tumor_free),
        "n_gt_boxes": sum(r["n_gt"] for r in rows),
        "n_pred_components": sum(r["n_pred"] for r in rows),
    }
    for key in ("dice", "iou", "box_iou", "box_iou_best_match", "fill_ratio", "outside_fraction", "outline_dice"):
        summary[f"{key}_mean"] = _mean(r[key] for r in rows)
        summary[f"{key}_median"] = _median(r[key] for r in rows)
    summary["dice_mean_tumor_images"] = _mean(r["dice"] for r in tumor)
    summary["n_outlines"] = sum(r["outline_dice"] is not None for r in rows)
    for name, counts, rule in (
        ("detection", detection, ("iou_threshold", DETECTION_IOU)),
        ("containment", containment, ("min_inside", CONTAINMENT_MIN_INSIDE)),
    ):
        summary[f"{name}_{rule[0]}"] = rule[1]
        summary.update({f"{name}_{k}": getattr(counts, k) for k in ("tp", "fp", "fn", "precision", "recall", "f1")})
    summary["tumor_free_fp_components"] = sum(r["n_pred"] for r in tumor_free)
    summary["tumor_free_images_with_fp"] = sum(r["n_pred"] > 0 for r in tumor_free)
    summary["tumor_free_fp_rate"] = summary["tumor_free_images_with_fp"] / len(tumor_free) if tumor_free else None
    summary["n_images_tumor_found"] = sum(r["n_pred"] > 0 for r in rows)
    summary["n_images_no_tumor_found"] = len(rows) - summary["n_images_tumor_found"]
    summary["components_per_tumor_image_mean"] = _mean(r["n_pred"] for r in tumor)
    summary["n_images_input_unusual"] = sum(bool(r.get("input_unusual")) for r in rows)
    if gt_coco is not None:
        for iou_type in ("bbox", "segm"):
            ap = coco_ap(gt_coco, coco_results, iou_type)
            summary.update({f"{iou_type}_{k}": v for k, v in ap.items()})
    return summary


def _outline_path(outlines_dir: str | os.PathLike | None, image: str) -> str | None:
    """``outlines_dir/<image stem>.png`` when it exists."""
    if outlines_dir is None:
        return None
    path = os.path.join(os.fspath(outlines_dir), image_stem(image) + ".png")
    return path if os.path.isfile(path) else None


def _check_outlines_dir(outlines_dir: str | os.PathLike | None) -> None:
    if outlines_dir is not None and not os.path.isdir(outlines_dir):
        raise FileNotFoundError(f"{os.fspath(outlines_dir)}: outline folder not found")


def evaluate_predictions(
    records: Sequence[Mapping[str, Any]],
    predictions: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray | None]],
    outlines_dir: str | os.PathLike | None = None,
) -> Evaluation:
    """Evaluate predictions of a datalist: per-image rows, the split's summary, COCO results.

    Args:
        records: datalist records (:func:`~scripts.coco.coco_to_datalist`).
        predictions: one per record, in the same order: a mask, ``(mask, prob)``, or a
            :class:`~scripts.predictor.TumorPrediction`. May be a generator, consumed one
            prediction at a time (constant memory).
        outlines_dir: folder of true outlines ``<image stem>.png`` (0/255); images without
            one get ``outline_dice`` None.

    Returns:
        The :class:`Evaluation`; see :func:`summarize` for the summary's keys.

    Raises:
        ValueError: there are more or fewer predictions than records, or a shape is wrong.
        FileNotFoundError: ``outlines_dir`` is given but is not a folder.
    """
    _check_outlines_dir(outlines_dir)
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    iterator: Iterator = iter(predictions)
    for record in records:
        item = next(iterator, None)
        if item is None:
            raise ValueError(f"{len(rows)} predictions for {len(records)} records")
        score = getattr(item, "tumor_score", None)
        if score is not None:
            mask, prob = item.mask, item.probability
        else:
            mask, prob = item if isinstance(item, tuple) else (item, None)
        outline = _outline_path(outlines_dir, record["image"])
        row, found = evaluate_image(record, mask, prob, outline, score, getattr(item, "input_unusual", None))
        rows.append(row)
        results.extend(found)
    if next(iterator, None) is not None:
        raise ValueError(f"more predictions than the {len(records)} records")
    return Evaluation(rows=rows, summary=summarize(rows, records_to_coco(records), results), coco_results=results)


def _write_json(data: Any, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _write_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """CSV with the columns :data:`ROW_FIELDS`; ``None`` becomes an empty cell."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _predict_and_save(predictor: Any, records: Sequence[Mapping[str, Any]], masks_dir: str) -> Iterator[Any]:
    """Predict each record's image, write its mask to ``masks_dir/<stem>.png``, yield the prediction."""
    from tqdm.auto import tqdm

    for record in tqdm(records, desc="evaluate", unit="image", disable=None):
        prediction = predictor.predict_file(record["image"], details=True)
        write_mask(prediction.mask, mask_output_path(record["image"], masks_dir))
        yield prediction


def evaluate_split(
    predictor: Any,
    split_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    outlines_dir: str | os.PathLike | None = None,
    category_map: Mapping[str | int, int] | None = None,
    gallery: bool = True,
) -> dict[str, Any]:
    """Run a predictor over a COCO split and write its evaluation.

    Writes, each file atomically, into ``output_dir``: :data:`PER_IMAGE_FILE` (one row per
    image, :data:`ROW_FIELDS`), :data:`SUMMARY_FILE` (the summary), :data:`RESULTS_FILE`
    (every component in COCO results format, for pycocotools), the masks
    ``masks/<image stem>.png`` (0/255) and, with ``gallery``, :data:`GALLERY_FILE` (best,
    median and worst images by Dice, :func:`brainseg_monai.report.overlay_gallery`).

    Args:
        predictor: a :class:`~scripts.predictor.BundlePredictor` (anything with
            ``predict_file(path, details=True) -> TumorPrediction``).
        split_dir: the split folder holding images and ``_annotations.coco.json``.
        output_dir: where the files go (created if missing).
        outlines_dir: folder of true outlines ``<image stem>.png``, for ``outline_dice``.
        category_map: as in :func:`~scripts.coco.resolve_category_map`.
        gallery: also draw the overlay gallery.

    Returns:
        The summary (:func:`summarize`) plus ``split_dir`` and ``model`` (the predictor's ``name``).

    Raises:
        CocoDataError: the split has errors.
        FileNotFoundError: ``outlines_dir`` is given but is not a folder.
    """
    _check_outlines_dir(outlines_dir)
    records = coco_to_datalist(split_dir, category_map)
    out = Path(output_dir)
    masks_dir = str(out / MASKS_DIR)
    evaluation = evaluate_predictions(records, _predict_and_save(predictor, records, masks_dir), outlines_dir)
    summary = {
        **evaluation.summary,
        "split_dir": os.path.abspath(os.fspath(split_dir)),
        "model": getattr(predictor, "name", type(predictor).__name__),
    }
    _write_rows(evaluation.rows, out / PER_IMAGE_FILE)
    _write_json(evaluation.coco_results, out / RESULTS_FILE)
    _write_json(summary, out / SUMMARY_FILE)
    if gallery and records:
        _write_gallery(records, evaluation.rows, masks_dir, outlines_dir, out / GALLERY_FILE)
    return summary


def _write_gallery(
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    masks_dir: str,
    outlines_dir: str | os.PathLike | None,
    path: Path,
) -> None:
    from brainseg_monai.report import overlay_gallery

    boxes = []
    for rec in records:
        label = rec["label"]
        boxes.append([annotation_box(a, int(label["height"]), int(label["width"])) for a in label["annotations"]])
    overlay_gallery(
        rows,
        image_paths=[rec["image"] for rec in records],
        pred_masks=[mask_output_path(rec["image"], masks_dir) for rec in records],
        gt_boxes=boxes,
        output_path=path,
        outlines=None if outlines_dir is None else [_outline_path(outlines_dir, rec["image"]) for rec in records],
    )
