"""Box and containment detection on a prediction's connected components against COCO boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..coco import rasterize_annotations
from ..components import Component, _as_binary
from .pixel import dice_iou

#: A predicted component box detects a COCO box when their IoU is at least this.
DETECTION_IOU = 0.5
#: A predicted component detects a COCO box when at least this fraction of its pixels lies inside it.
CONTAINMENT_MIN_INSIDE = 0.5
# Rounding must not turn an IoU of exactly the threshold into a miss: MONAI computes box IoU in float32.
_TOLERANCE = 1e-6

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


def annotation_box(annotation: Mapping[str, Any], height: int, width: int) -> list[float]:
    """The COCO box of an annotation: its ``bbox``, or the box around its rasterized segmentation.

    Raises:
        ValueError: the annotation has neither a bbox nor a non-empty segmentation.
    """
    bbox = annotation.get("bbox")
    if bbox:
        return [float(v) for v in bbox]
    if not annotation.get("segmentation"):
        raise ValueError("annotation has neither a bbox nor a non-empty segmentation")
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
    return float(_box_iou_matrix([a], [b])[0, 0])


def _box_iou_matrix(pred_boxes: Sequence[Box], gt_boxes: Sequence[Box]) -> np.ndarray:
    """(n_pred, n_gt) IoU of COCO ``[x, y, w, h]`` boxes, with MONAI's detection box utilities."""
    from monai.data.box_utils import box_iou as monai_box_iou
    from monai.data.box_utils import convert_box_mode

    if not len(pred_boxes) or not len(gt_boxes):
        return np.zeros((len(pred_boxes), len(gt_boxes)), dtype=np.float64)

    def corners(boxes: Sequence[Box]) -> np.ndarray:
        return convert_box_mode(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), src_mode="xywh", dst_mode="xyxy")

    return np.asarray(monai_box_iou(corners(pred_boxes), corners(gt_boxes)), dtype=np.float64)


def greedy_match(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one matching of predictions (rows) to references (columns), best score first.

    COCO-style evaluation matching; MONAI's detection ``Matcher`` assigns training anchors
    (ATSS), a different job.

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
