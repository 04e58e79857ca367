"""The evaluation figures, as ``brainseg`` and the benchmarks import them.

Every metric lives in the bundle (``bundle/scripts/metrics``: :mod:`scripts.metrics.pixel`,
:mod:`scripts.metrics.detection`, :mod:`scripts.metrics.coco_ap`, :mod:`scripts.metrics.evaluation`
and the ignite metric of ``evaluate.json``, :mod:`scripts.metrics.tumor_evaluation`); this
package re-exports them, and :mod:`.evaluation` runs the bundle's evaluation workflow on a
split and draws its pictures (:func:`evaluate_split`).
"""

from __future__ import annotations

from brainseg_monai.metrics.evaluation import (
    GALLERY_FILE,
    MASKS_DIR,
    OVERLAYS_DIR,
    Evaluation,
    ForeignFilesError,
    check_replaced_folders,
    evaluate_split,
)
from scripts.components import Component, components_to_boxes
from scripts.metrics.coco_ap import TUMOR_CATEGORY_ID, coco_ap, records_to_coco, to_coco_results
from scripts.metrics.detection import (
    CONTAINMENT_MIN_INSIDE,
    DETECTION_IOU,
    Box,
    DetectionCounts,
    annotation_box,
    annotation_masks,
    best_match_box_iou,
    box_iou,
    box_masks,
    containment_counts,
    detection_counts,
    fill_ratios,
    greedy_match,
    outside_fraction,
    union_box_iou,
)
from scripts.metrics.evaluation import PER_IMAGE_FILE, RESULTS_FILE, ROW_FIELDS, SUMMARY_FILE, evaluate_image, summarize
from scripts.metrics.pixel import dice_iou, load_outline, outline_dice
from scripts.metrics.tumor_evaluation import EvaluationWriter, TumorEvaluation, evaluate_predictions

__all__ = [
    "CONTAINMENT_MIN_INSIDE",
    "DETECTION_IOU",
    "GALLERY_FILE",
    "MASKS_DIR",
    "OVERLAYS_DIR",
    "PER_IMAGE_FILE",
    "RESULTS_FILE",
    "ROW_FIELDS",
    "SUMMARY_FILE",
    "TUMOR_CATEGORY_ID",
    "Box",
    "Component",
    "DetectionCounts",
    "Evaluation",
    "EvaluationWriter",
    "ForeignFilesError",
    "TumorEvaluation",
    "annotation_box",
    "annotation_masks",
    "best_match_box_iou",
    "box_iou",
    "box_masks",
    "check_replaced_folders",
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
