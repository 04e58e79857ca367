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

One file per job: :mod:`.pixel` (pixel overlap), :mod:`.detection` (boxes, matching,
containment), :mod:`.coco_ap` (COCO results and AP) and :mod:`.evaluation` (rows, summary,
the evaluation run and its files). The names below are re-exported from them.
"""

from __future__ import annotations

from brainseg_monai.metrics.coco_ap import TUMOR_CATEGORY_ID, coco_ap, records_to_coco, to_coco_results
from brainseg_monai.metrics.detection import (
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
from brainseg_monai.metrics.evaluation import (
    GALLERY_FILE,
    MASKS_DIR,
    OVERLAYS_DIR,
    PER_IMAGE_FILE,
    RESULTS_FILE,
    ROW_FIELDS,
    SUMMARY_FILE,
    Evaluation,
    evaluate_image,
    evaluate_predictions,
    evaluate_split,
    summarize,
)
from brainseg_monai.metrics.pixel import dice_iou, load_outline, outline_dice
from scripts.components import Component, components_to_boxes

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
