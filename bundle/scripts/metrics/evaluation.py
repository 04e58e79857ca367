"""Per-image rows of every evaluation figure, a split's summary of them, and their files.

:class:`~.tumor_evaluation.TumorEvaluation` (the ignite metric of ``evaluate.json``) calls
:func:`evaluate_image` per image and :func:`summarize` per split.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..coco import rasterize_annotations
from ..components import _as_binary, components_to_boxes
from ..csv_files import write_csv
from ..io import atomic_output, image_stem
from .coco_ap import coco_ap, to_coco_results
from .detection import (
    CONTAINMENT_MIN_INSIDE,
    DETECTION_IOU,
    DetectionCounts,
    annotation_box,
    annotation_masks,
    best_match_box_iou,
    containment_counts,
    detection_counts,
    fill_ratios,
    outside_fraction,
    union_box_iou,
)
from .pixel import dice_iou, outline_dice

PER_IMAGE_FILE = "metrics_per_image.csv"
SUMMARY_FILE = "metrics_summary.json"
RESULTS_FILE = "coco_results.json"
__all__ = [
    "PER_IMAGE_FILE",
    "RESULTS_FILE",
    "ROW_FIELDS",
    "SUMMARY_FILE",
    "check_outlines_dir",
    "evaluate_image",
    "outline_path",
    "summarize",
    "write_json",
    "write_rows",
]

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
    "possible_tumor",
    "tumor_score",
    "input_unusual",
    "found_at_tumor",
    "shown_at_tumor",
)


def evaluate_image(
    record: Mapping[str, Any],
    mask: np.ndarray,
    prob: np.ndarray | None = None,
    outline: np.ndarray | str | os.PathLike | None = None,
    tumor_score: float | None = None,
    input_unusual: bool | None = None,
    possible_tumor: bool = False,
    possible_mask: np.ndarray | None = None,
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
        possible_tumor: the post-processing showed a possible tumor (:mod:`scripts.verdict`).
        possible_mask: optional (H, W) mask of the possible tumors, for ``shown_at_tumor``.

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
        "possible_tumor": bool(possible_tumor),
        "tumor_score": round(
            float(tumor_score) if tumor_score is not None else max((c.score for c in components), default=0.0), 4
        ),
        "input_unusual": input_unusual,
        **_at_tumor(pred, gt_box_masks, possible_tumor, possible_mask),
    }
    return row, to_coco_results(record["image_id"], pred, prob)


def _at_tumor(
    pred: np.ndarray, gt_box_masks: Sequence[np.ndarray], possible_tumor: bool, possible_mask: np.ndarray | None
) -> dict[str, bool | None]:
    """Whether a tumor (``found_at_tumor``), or a tumor or possible tumor (``shown_at_tumor``), lies at the
    annotated tumor: at least one of its pixels inside a COCO box. A tumor drawn only elsewhere on the slice
    says "tumor" but leaves the tumor itself unmarked. None on an image without a box, and ``shown_at_tumor``
    None for a possible tumor whose mask was not given."""
    if not gt_box_masks:
        return {"found_at_tumor": None, "shown_at_tumor": None}
    at_tumor = np.any(gt_box_masks, axis=0)
    found = bool((pred & at_tumor).any())
    if found or not possible_tumor:
        return {"found_at_tumor": found, "shown_at_tumor": found}
    if possible_mask is None:
        return {"found_at_tumor": found, "shown_at_tumor": None}
    possible = _as_binary(possible_mask, "possible tumor mask")
    if possible.shape != pred.shape:
        raise ValueError(f"the possible tumor mask is {possible.shape}, the prediction {pred.shape}")
    return {"found_at_tumor": found, "shown_at_tumor": bool((possible & at_tumor).any())}


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
    * ``tumor_images_found_at_tumor`` (and ``_rate``, of the images with a box): images whose tumor
      touches an annotated box (``found_at_tumor``); ``tumor_images_nothing_shown_at_tumor`` (and
      ``_rate``): images with neither a tumor nor a possible tumor touching one (``shown_at_tumor``
      False), whatever is drawn elsewhere. None when a row does not say (an older row, or a possible
      tumor without its mask). ``tumor_images_found_rate`` and ``tumor_images_nothing_shown`` count a
      tumor anywhere on the slice;
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

    # the three-level verdict: a possible tumor is shown, not found; "nothing shown" is a silent miss
    def nothing_shown(row: Mapping[str, Any]) -> bool:
        return row["n_pred"] == 0 and not row.get("possible_tumor")

    summary["n_images_possible_tumor"] = sum(r["n_pred"] == 0 and bool(r.get("possible_tumor")) for r in rows)
    summary["n_images_nothing_shown"] = sum(map(nothing_shown, rows))
    summary["tumor_images_found_rate"] = sum(r["n_pred"] > 0 for r in tumor) / len(tumor) if tumor else None
    summary["tumor_images_nothing_shown"] = sum(map(nothing_shown, tumor))
    summary["tumor_images_nothing_shown_rate"] = summary["tumor_images_nothing_shown"] / len(tumor) if tumor else None
    summary["tumor_free_images_with_possible"] = sum(
        r["n_pred"] == 0 and bool(r.get("possible_tumor")) for r in tumor_free
    )
    for name, field, value in (
        ("found_at_tumor", "found_at_tumor", True),
        ("nothing_shown_at_tumor", "shown_at_tumor", False),
    ):
        answers = [r.get(field) for r in tumor]
        known = bool(tumor) and all(a is not None for a in answers)
        count = sum(a is value for a in answers) if known else None
        summary[f"tumor_images_{name}"] = count
        summary[f"tumor_images_{name}_rate"] = None if count is None else count / len(tumor)
    summary["components_per_tumor_image_mean"] = _mean(r["n_pred"] for r in tumor)
    summary["n_images_input_unusual"] = sum(bool(r.get("input_unusual")) for r in rows)
    if gt_coco is not None:
        for iou_type in ("bbox", "segm"):
            ap = coco_ap(gt_coco, coco_results, iou_type)
            summary.update({f"{iou_type}_{k}": v for k, v in ap.items()})
    return summary


def outline_path(outlines_dir: str | os.PathLike | None, image: str | os.PathLike) -> str | None:
    """``outlines_dir/<image stem>.png`` when there is such an entry (a link too: :func:`load_outline` refuses it)."""
    if outlines_dir is None:
        return None
    path = os.path.join(os.fspath(outlines_dir), image_stem(image) + ".png")
    return path if os.path.lexists(path) else None


def check_outlines_dir(outlines_dir: str | os.PathLike | None) -> None:
    """Refuse, before any work, an outline folder that is not there or holds an outline that is a symbolic link.

    An outline is read as a mask: a link in the folder would be followed to whatever it names (``/dev/zero``,
    a file outside the folder). ``None``: no outlines.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: naming the first ``.png`` entry that is a symbolic link, and how many there are.
    """
    if outlines_dir is None:
        return
    folder = os.fspath(outlines_dir)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: outline folder not found")
    with os.scandir(folder) as entries:
        links = sorted(e.name for e in entries if e.name.lower().endswith(".png") and e.is_symlink())
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise ValueError(
            f"{os.path.join(folder, links[0])}: outline is a symbolic link{more}: refused; an outline folder must "
            "hold the outline files themselves (copy them in, e.g. cp -L)"
        )


def write_json(data: Any, path: str | os.PathLike) -> None:
    """``data`` as indented JSON, atomically."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """CSV with the columns :data:`ROW_FIELDS`; ``None`` becomes an empty cell."""
    write_csv(rows, path, ROW_FIELDS)
