"""Metrics on hand-computed masks and boxes, COCO AP with pycocotools, and a real split evaluation."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_OUTLINES, SAMPLE_SPLIT, SMOKE_NETWORK
from PIL import Image
from pycocotools import mask as mask_utils

from scripts.coco import ANNOTATION_FILE, coco_to_datalist, load_coco_json, rasterize_annotations
from scripts.io import write_mask
from scripts.metrics.evaluation import check_outlines_dir, outline_path, summarize, write_json, write_rows
from brainseg_monai.metrics import (
    GALLERY_FILE,
    MASKS_DIR,
    PER_IMAGE_FILE,
    RESULTS_FILE,
    ROW_FIELDS,
    SUMMARY_FILE,
    DetectionCounts,
    annotation_box,
    annotation_masks,
    best_match_box_iou,
    box_iou,
    coco_ap,
    components_to_boxes,
    containment_counts,
    detection_counts,
    dice_iou,
    evaluate_image,
    evaluate_predictions,
    evaluate_split,
    fill_ratios,
    greedy_match,
    outline_dice,
    outside_fraction,
    to_coco_results,
    union_box_iou,
)


def _output(image: str, mask, prob=None) -> dict:
    import torch
    from monai.data import MetaTensor

    item = {
        "image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": image}),
        "pred": torch.as_tensor(np.asarray(mask)[None]),
    }
    if prob is not None:
        item["pred_prob"] = torch.as_tensor(np.stack([1 - prob, prob]))
    return item


def box_mask(shape: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def record(image_id: int, boxes: list[list[float]], size: tuple[int, int] = (20, 20), name: str | None = None) -> dict:
    """A datalist record as coco_to_datalist writes it, boxes only (no segmentation: drawn from bbox)."""
    height, width = size
    anns = [{"segmentation": None, "bbox": list(b), "label": 1} for b in boxes]
    return {
        "image": f"/nowhere/{name or f'img{image_id}'}.png",
        "image_id": image_id,
        "label": {"height": height, "width": width, "annotations": anns},
    }


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)


# --------------------------------------------------------------------------- Dice / IoU


def test_dice_iou_perfect_partial_and_empty_conventions():
    gt = box_mask((8, 8), 1, 1, 3, 2)  # 6 px
    assert dice_iou(gt, gt) == (1.0, 1.0)
    pred = box_mask((8, 8), 3, 1, 2, 2)  # 4 px, 2 of them in gt
    dice, iou = dice_iou(pred, gt)
    assert dice == pytest.approx(2 * 2 / (4 + 6))
    assert iou == pytest.approx(2 / 8)
    empty = np.zeros((8, 8), np.uint8)
    assert dice_iou(empty, empty) == (1.0, 1.0)  # a correct true negative
    assert dice_iou(pred, empty) == (0.0, 0.0)
    assert dice_iou(empty, gt) == (0.0, 0.0)


def test_dice_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2D"):
        dice_iou(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


def test_outline_dice_against_png(tmp_path: Path):
    truth = box_mask((10, 10), 2, 2, 4, 4)  # 16 px
    path = write_mask(truth, tmp_path / "truth.png")  # 0/255 on disk
    assert np.unique(np.asarray(Image.open(path))).tolist() == [0, 255]
    pred = box_mask((10, 10), 2, 2, 4, 2)  # 8 px, all inside
    assert outline_dice(pred, path) == pytest.approx(2 * 8 / (8 + 16))
    assert outline_dice(truth, truth * 255) == 1.0
    with pytest.raises(ValueError, match="outline is"):
        outline_dice(np.zeros((12, 12)), path)
    with pytest.raises(FileNotFoundError):
        outline_dice(pred, tmp_path / "missing.png")


# --------------------------------------------------------------------------- components and boxes


def test_components_eight_connected_boxes_areas_scores():
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0] = mask[1, 1] = 1  # diagonal neighbours: one component with 8-connectivity
    mask[5:7, 3:8] = 1  # 2 x 5 block
    prob = np.zeros((10, 10), np.float32)
    prob[0, 0], prob[1, 1] = 0.6, 1.0
    prob[5:7, 3:8] = 0.8
    comps = components_to_boxes(mask, prob)
    assert [c.bbox for c in comps] == [[0.0, 0.0, 2.0, 2.0], [3.0, 5.0, 5.0, 2.0]]
    assert [c.area for c in comps] == [2, 10]
    assert comps[0].score == pytest.approx(0.8)
    assert comps[1].score == pytest.approx(0.8)
    assert [c.score for c in components_to_boxes(mask)] == [1.0, 1.0]
    np.testing.assert_array_equal(comps[1].full_mask(10, 10), mask * (np.arange(10)[:, None] >= 5))
    assert components_to_boxes(np.zeros((5, 5))) == []


def test_components_of_small_tumors_far_from_the_corner_of_a_large_slice():
    """Components are labelled within the foreground's box: boxes, areas, scores, order and full masks must be
    those of scikit-image's labelling of the whole slice, at any offset and in the slice's last corner."""
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(3)
    for _ in range(20):
        height, width = rng.integers(300, 700, 2)
        mask = np.zeros((height, width), bool)
        for _ in range(rng.integers(1, 4)):
            h, w = rng.integers(1, 40, 2)
            y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            mask[y : y + h, x : x + w] = True
        mask[-1, -1] = rng.random() < 0.5  # sometimes a one-pixel component in the last corner
        prob = np.where(mask, rng.uniform(0.3, 1.0, mask.shape), 0.0).astype(np.float32)
        comps = components_to_boxes(mask, prob)
        labels = label(mask, connectivity=2)
        regions = regionprops(labels)
        assert [c.bbox for c in comps] == [
            [float(r.bbox[1]), float(r.bbox[0]), float(r.bbox[3] - r.bbox[1]), float(r.bbox[2] - r.bbox[0])]
            for r in regions
        ]
        assert [c.area for c in comps] == [int(r.area) for r in regions]
        assert [c.score for c in comps] == pytest.approx([float(prob[labels == r.label].mean()) for r in regions])
        np.testing.assert_array_equal(np.logical_or.reduce([c.full_mask(height, width) for c in comps]), mask)


def test_box_iou_hand_computed():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [10, 0, 5, 5]) == 0.0  # touching edges only
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 5]) == 0.5
    # asymmetric in x and y, so swapping the axes gives another answer
    assert box_iou([0, 0, 20, 10], [10, 0, 20, 10]) == pytest.approx(100 / 300)  # shifted along x by half
    assert box_iou([0, 0, 20, 10], [0, 5, 20, 10]) == pytest.approx(100 / 300)  # shifted along y by half
    assert box_iou([0, 0, 20, 10], [0, 0, 10, 20]) == pytest.approx(100 / 300)  # the same box, transposed
    assert box_iou([2, 3, 4, 6], [4, 6, 10, 1]) == pytest.approx(2 / 32)  # overlap 2 wide, 1 high


def test_annotation_box_without_a_bbox_is_the_extent_of_its_segmentation():
    """A polygon-only annotation: the box of the pixels pycocotools draws, in [x, y, w, h], off-centre and
    wider than high, so swapped axes or an off-by-one show."""
    extents = set()
    for x0, y0, x1, y1 in ((4, 3, 14, 8), (5, 2, 12, 10), (1, 6, 9, 9)):  # widths and heights odd and even
        polygon = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        drawn = rasterize_annotations([{"segmentation": polygon, "label": 1}], 20, 30) > 0
        rows, cols = np.nonzero(drawn)
        expected = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert annotation_box({"segmentation": polygon, "label": 1}, 20, 30) == [float(v) for v in expected]
        extents |= {(expected[2] % 2, expected[3] % 2)}
    assert {w for w, _ in extents} == {h for _, h in extents} == {0, 1}, extents  # an XOR 1 for + 1 shows
    assert annotation_box({"bbox": [1, 2, 3, 4], "segmentation": polygon}, 20, 30) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="neither a bbox nor a non-empty segmentation"):
        annotation_box({"segmentation": [], "label": 1}, 20, 30)


def test_detection_iou_exactly_at_threshold_is_a_match():
    gt = [[0, 0, 10, 10]]
    assert detection_counts([[0, 0, 10, 5]], gt) == DetectionCounts(tp=1, fp=0, fn=0)  # IoU 0.5
    assert detection_counts([[0, 0, 10, 4]], gt) == DetectionCounts(tp=0, fp=1, fn=1)  # IoU 0.4
    # a float box whose IoU is 0.5 up to rounding still matches
    assert detection_counts([[0.1, 0.2, 10 * 0.7, 10 / 0.7 * 0.5]], [[0.1, 0.2, 10 * 0.7, 10 / 0.7]]).tp == 1


def test_detection_greedy_one_to_one_and_two_gt_boxes():
    gt = [[0, 0, 10, 10], [20, 20, 10, 10]]
    assert detection_counts([[0, 0, 10, 10], [20, 20, 10, 10]], gt) == DetectionCounts(2, 0, 0)
    # two predictions on one box: one is a duplicate (FP), the other box is missed (FN)
    assert detection_counts([[0, 0, 10, 10], [0, 0, 10, 9]], gt) == DetectionCounts(1, 1, 1)
    assert detection_counts([], gt) == DetectionCounts(0, 0, 2)
    assert detection_counts([[0, 0, 3, 3]], []) == DetectionCounts(0, 1, 0)
    # greedy by score, best pair first; not an optimal assignment
    assert greedy_match(np.array([[0.9, 0.6], [0.7, 0.0]]), 0.5) == [(0, 0)]
    assert greedy_match(np.array([[0.6, 0.9], [0.7, 0.0]]), 0.5) == [(0, 1), (1, 0)]
    assert greedy_match(np.zeros((0, 2)), 0.5) == []


def test_box_iou_union_and_best_match():
    shape = (40, 40)
    gt_boxes = [[0, 0, 10, 10], [20, 20, 10, 10]]
    gt_masks = annotation_masks([{"bbox": b} for b in gt_boxes], *shape)
    assert [int(m.sum()) for m in gt_masks] == [100, 100]
    assert union_box_iou(gt_boxes, gt_masks, *shape) == 1.0
    assert best_match_box_iou(gt_boxes, gt_boxes) == 1.0
    # one prediction covering the first box only: union IoU 100/200; best match mean (1 + 0) / 2
    assert union_box_iou([[0, 0, 10, 10]], gt_masks, *shape) == pytest.approx(0.5)
    assert best_match_box_iou([[0, 0, 10, 10]], gt_boxes) == pytest.approx(0.5)
    # one big box over both: union IoU 200 / 900; each GT box gets IoU 100/900
    assert union_box_iou([[0, 0, 30, 30]], gt_masks, *shape) == pytest.approx(200 / 900)
    assert best_match_box_iou([[0, 0, 30, 30]], gt_boxes) == pytest.approx(100 / 900)
    # no boxes anywhere: a true negative; boxes on one side only: 0
    assert union_box_iou([], [], *shape) == 1.0 and best_match_box_iou([], []) == 1.0
    assert union_box_iou([[0, 0, 5, 5]], [], *shape) == 0.0 and best_match_box_iou([[0, 0, 5, 5]], []) == 0.0
    assert union_box_iou([], gt_masks, *shape) == 0.0 and best_match_box_iou([], gt_boxes) == 0.0


# --------------------------------------------------------------------------- containment, fill, outside


def test_rectangle_versus_outline_shaped_prediction():
    shape = (40, 40)
    gt_masks = annotation_masks([{"bbox": [10, 10, 20, 20]}], *shape)  # 400 px
    rectangle = box_mask(shape, 10, 10, 20, 20)
    outline = disc(shape, 19.5, 19.5, 7.0)  # a round "tumor" well inside the box
    n_outline = int(outline.sum())
    assert fill_ratios(rectangle, gt_masks) == [1.0]
    assert fill_ratios(outline, gt_masks) == [pytest.approx(n_outline / 400)]
    assert outside_fraction(rectangle, gt_masks) == 0.0
    assert outside_fraction(outline, gt_masks) == 0.0
    # both detect the box by containment, only the rectangle by box IoU >= 0.5
    for pred in (rectangle, outline):
        assert containment_counts(components_to_boxes(pred), gt_masks) == DetectionCounts(1, 0, 0)
    assert detection_counts([c.bbox for c in components_to_boxes(rectangle)], [[10, 10, 20, 20]]).tp == 1
    outline_box = components_to_boxes(outline)[0].bbox
    assert outline_box == [13.0, 13.0, 14.0, 14.0]  # columns and rows 13..26
    assert box_iou(outline_box, [10, 10, 20, 20]) == pytest.approx(196 / 400)
    assert detection_counts([outline_box], [[10, 10, 20, 20]]) == DetectionCounts(0, 1, 1)


def test_containment_threshold_fragments_and_two_boxes():
    shape = (40, 40)
    gt_masks = annotation_masks([{"bbox": [0, 0, 10, 10]}, {"bbox": [20, 20, 10, 10]}], *shape)
    # 10 px wide, exactly 5 columns inside the first box: 50% inside counts
    half = box_mask(shape, 5, 2, 10, 2)
    assert containment_counts(components_to_boxes(half), gt_masks) == DetectionCounts(1, 0, 1)
    less = box_mask(shape, 6, 2, 10, 2)  # 40% inside
    assert containment_counts(components_to_boxes(less), gt_masks) == DetectionCounts(0, 1, 2)
    # two fragments inside the first box: one matches, the second is a false positive
    fragments = box_mask(shape, 1, 1, 2, 2) | box_mask(shape, 6, 6, 2, 2)
    assert containment_counts(components_to_boxes(fragments), gt_masks) == DetectionCounts(1, 1, 1)
    # one component in each box
    both = box_mask(shape, 2, 2, 3, 3) | box_mask(shape, 22, 22, 3, 3)
    assert containment_counts(components_to_boxes(both), gt_masks) == DetectionCounts(2, 0, 0)
    # fill ratio per box and the fraction outside every box
    pred = box_mask(shape, 0, 0, 10, 5) | box_mask(shape, 35, 35, 2, 5)  # 50 inside box 1, 10 outside
    assert fill_ratios(pred, gt_masks) == [0.5, 0.0]
    assert outside_fraction(pred, gt_masks) == pytest.approx(10 / 60)
    assert outside_fraction(np.zeros(shape), gt_masks) is None
    assert outside_fraction(pred, []) == 1.0


def test_detection_counts_ratio_conventions():
    assert (DetectionCounts(0, 0, 0).precision, DetectionCounts().recall, DetectionCounts().f1) == (1.0, 1.0, 1.0)
    counts = DetectionCounts(3, 1, 2)
    assert counts.precision == 0.75 and counts.recall == 0.6
    assert counts.f1 == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert DetectionCounts(0, 0, 4).precision == 0.0 and DetectionCounts(0, 2, 0).recall == 0.0
    assert DetectionCounts(1, 2, 3) + DetectionCounts(1, 1, 1) == DetectionCounts(2, 3, 4)
    assert DetectionCounts(1, 1, 1) + DetectionCounts(1, 1, 1) == DetectionCounts(2, 2, 2)  # sums, not bit ors
    # one of three boxes found: two missed; three predictions, one right: two false
    three = [[0, 0, 10, 10], [20, 0, 10, 10], [0, 20, 10, 10]]
    assert detection_counts([[0, 0, 10, 10]], three) == DetectionCounts(tp=1, fp=0, fn=2)
    assert detection_counts(three, [[0, 0, 10, 10]]) == DetectionCounts(tp=1, fp=2, fn=0)
    masks = annotation_masks([{"bbox": b} for b in three], 40, 40)
    one = np.zeros((40, 40), np.uint8)
    one[2:8, 2:8] = 1
    assert containment_counts(components_to_boxes(one), masks) == DetectionCounts(tp=1, fp=0, fn=2)
    spread = one.copy()
    spread[30:34, 30:34] = spread[30:34, 12:16] = 1
    assert containment_counts(components_to_boxes(spread), masks[:1]) == DetectionCounts(tp=1, fp=2, fn=0)


def test_fill_ratio_of_a_one_pixel_box_and_an_empty_one():
    pred = np.zeros((10, 10), bool)
    pred[4, 4] = True
    one_pixel, empty = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    one_pixel[4, 4] = True
    assert fill_ratios(pred, [one_pixel, empty]) == [1.0, 0.0]


def test_containment_of_a_component_that_is_not_a_rectangle():
    """An L-shaped component whose box is mostly background: the fraction inside a COCO box counts the
    component's own pixels, not the background pixels of its box."""
    shape = (40, 40)
    gt_masks = annotation_masks([{"bbox": [0, 0, 10, 10]}], *shape)
    ell = np.zeros(shape, np.uint8)
    ell[5:40, 8:10] = 1  # 70 px, 10 of them inside the box (rows 5..9)
    ell[38:40, 10:40] = 1  # 60 px, outside
    (component,) = components_to_boxes(ell)
    assert component.area == 130 and component.bbox == [8.0, 5.0, 32.0, 35.0]
    assert containment_counts([component], gt_masks) == DetectionCounts(0, 1, 1)  # 10 / 130 inside
    corner = np.zeros(shape, np.uint8)
    corner[0:40, 0] = 1  # 10 of its 40 px inside the box
    corner[39, 1:40] = 1  # 39 px outside: its box holds the whole COCO box, 90 px of it background
    assert containment_counts(components_to_boxes(corner), gt_masks) == DetectionCounts(0, 1, 1)
    small = np.zeros(shape, np.uint8)
    small[2:8, 2:4] = 1  # 12 px inside
    small[6:8, 4:14] = 1  # 20 px, 12 of them inside (columns 4..9): 24 / 32 inside
    assert containment_counts(components_to_boxes(small), gt_masks) == DetectionCounts(1, 0, 0)


# --------------------------------------------------------------------------- per image and aggregation


def test_evaluate_image_perfect_and_two_boxes():
    rec = record(7, [[2, 2, 6, 4], [12, 10, 5, 8]])
    gt = rasterize_annotations(rec["label"]["annotations"], 20, 20)
    row, results = evaluate_image(rec, gt, outline=gt)
    assert set(row) == set(ROW_FIELDS)
    assert (row["file_name"], row["image_id"], row["n_gt"], row["n_pred"]) == ("img7.png", 7, 2, 2)
    for key in ("dice", "iou", "box_iou", "box_iou_best_match", "fill_ratio", "outline_dice"):
        assert row[key] == 1.0, key
    assert row["outside_fraction"] == 0.0
    assert (row["tp"], row["fp"], row["fn"]) == (2, 0, 0)
    assert (row["containment_tp"], row["containment_fp"], row["containment_fn"]) == (2, 0, 0)
    assert [r["bbox"] for r in results] == [[2.0, 2.0, 6.0, 4.0], [12.0, 10.0, 5.0, 8.0]]
    with pytest.raises(ValueError, match="prediction is"):
        evaluate_image(rec, np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"img7.png: prediction is \(30, 20\), the image is \(20, 20\)"):
        evaluate_image(rec, np.zeros((30, 20)))


def test_false_positives_on_tumor_free_images_and_summary():
    free = record(1, [])
    two_blobs = box_mask((20, 20), 0, 0, 3, 3) | box_mask((20, 20), 10, 10, 2, 2)
    row, results = evaluate_image(free, two_blobs)
    assert (row["dice"], row["iou"], row["box_iou"], row["box_iou_best_match"]) == (0.0, 0.0, 0.0, 0.0)
    assert (row["n_gt"], row["n_pred"], row["tp"], row["fp"], row["fn"]) == (0, 2, 0, 2, 0)
    assert (row["containment_tp"], row["containment_fp"]) == (0, 2)
    assert row["fill_ratio"] is None and row["outside_fraction"] == 1.0 and row["outline_dice"] is None
    assert len(results) == 2

    records = [free, record(2, []), record(3, [[0, 0, 10, 10]])]
    predictions = [two_blobs, np.zeros((20, 20)), (box_mask((20, 20), 0, 0, 10, 5), np.full((20, 20), 0.9))]
    ev = evaluate_predictions(records, predictions)
    s = ev.summary
    assert (s["n_images"], s["n_tumor_images"], s["n_tumor_free_images"]) == (3, 1, 2)
    assert (s["n_gt_boxes"], s["n_pred_components"]) == (1, 3)
    assert (s["tumor_free_fp_components"], s["tumor_free_images_with_fp"]) == (2, 1)
    # image 2 (empty, tumor-free) is a true negative: Dice 1; image 3: 50 of 100 px -> 2*50/150
    assert [r["dice"] for r in ev.rows] == [0.0, 1.0, pytest.approx(2 / 3)]
    assert s["dice_mean"] == pytest.approx((0 + 1 + 2 / 3) / 3)
    assert s["dice_median"] == pytest.approx(2 / 3)
    assert s["dice_mean_tumor_images"] == pytest.approx(2 / 3)
    assert (s["detection_tp"], s["detection_fp"], s["detection_fn"]) == (1, 2, 0)  # box IoU 0.5 counts
    assert s["detection_precision"] == pytest.approx(1 / 3) and s["detection_recall"] == 1.0
    assert s["detection_f1"] == pytest.approx(0.5)
    assert (s["containment_tp"], s["containment_fp"], s["containment_fn"]) == (1, 2, 0)
    assert s["fill_ratio_mean"] == 0.5 and s["n_outlines"] == 0 and s["outline_dice_mean"] is None
    assert s["box_iou_mean"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert [r["score"] for r in ev.coco_results] == [1.0, 1.0, pytest.approx(0.9)]
    # half the box is found: AP at IoU 0.5 only
    assert (s["bbox_AP50"], s["bbox_AP75"]) == (pytest.approx(1 / 3), 0.0)
    json.dumps(s)  # JSON-serializable, no NaN
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in s.values())
    # the summary covers the images evaluated, and an output of another image is refused by name
    with pytest.raises(ValueError, match="2 predictions for 3 records"):
        evaluate_predictions(records, predictions[:2])
    with pytest.raises(ValueError, match="more predictions"):
        evaluate_predictions(records[:2], predictions)
    with pytest.raises(ValueError, match="stranger.png: not an image of the evaluated datalist"):
        evaluate_predictions(records[:2], predictions[:2]).update(
            [_output("/nowhere/stranger.png", np.zeros((20, 20)))]
        )


def test_an_images_fill_ratio_is_the_mean_over_its_boxes_and_its_score_the_best_component():
    rec = record(4, [[0, 0, 4, 4], [10, 10, 2, 5]])  # 16 px and 10 px
    pred = box_mask((20, 20), 0, 0, 4, 2) | box_mask((20, 20), 10, 10, 2, 5)  # half the first box, all the second
    prob = np.full((20, 20), 0.1)
    prob[0:2, 0:4], prob[10:15, 10:12] = 0.6, 0.8
    row, results = evaluate_image(rec, pred, prob)
    assert row["fill_ratio"] == 0.75, "(8/16 + 10/10) / 2"
    assert row["dice"] == pytest.approx(2 * 18 / (18 + 26)) and row["iou"] == pytest.approx(18 / 26)
    assert row["box_iou"] == pytest.approx(18 / 26) and row["box_iou_best_match"] == pytest.approx((8 / 16 + 1) / 2)
    assert (row["n_gt"], row["n_pred"], row["tp"], row["fp"], row["fn"]) == (2, 2, 2, 0, 0)
    assert row["outside_fraction"] == 0.0 and row["outline_dice"] is None
    assert row["tumor_found"] is True and row["tumor_score"] == 0.8, "the best component's mean probability"
    assert (row["possible_tumor"], row["input_unusual"]) == (False, None)
    assert [r["score"] for r in results] == [pytest.approx(0.6), pytest.approx(0.8)]
    # the post-processing's score, rounded, and the flags as given
    row, _ = evaluate_image(rec, pred, prob, tumor_score=0.123456, input_unusual=True, possible_tumor=True)
    assert (row["tumor_score"], row["input_unusual"], row["possible_tumor"]) == (0.1235, True, True)
    empty, _ = evaluate_image(rec, np.zeros((20, 20)))
    assert (empty["tumor_found"], empty["tumor_score"], empty["fill_ratio"], empty["outside_fraction"]) == (
        False, 0.0, 0.0, None
    )  # fmt: skip


def test_a_tumor_counts_as_at_the_tumor_only_where_it_touches_an_annotated_box():
    """A slice can say "tumor" with the tumor itself unmarked: its tumor drawn elsewhere on the slice."""
    rec = record(5, [[2, 2, 4, 4]])
    elsewhere, at_box = box_mask((20, 20), 12, 12, 5, 5), box_mask((20, 20), 5, 5, 3, 3)  # the second one overlaps
    row, _ = evaluate_image(rec, elsewhere)
    assert (row["tumor_found"], row["found_at_tumor"], row["shown_at_tumor"]) == (True, False, False)
    row, _ = evaluate_image(rec, elsewhere | at_box)
    assert (row["found_at_tumor"], row["shown_at_tumor"]) == (True, True)
    # a possible tumor at the box shows the tumor; one elsewhere does not; one without its mask cannot be told
    row, _ = evaluate_image(rec, elsewhere, possible_tumor=True, possible_mask=at_box)
    assert (row["found_at_tumor"], row["shown_at_tumor"]) == (False, True)
    row, _ = evaluate_image(rec, np.zeros((20, 20)), possible_tumor=True, possible_mask=elsewhere)
    assert (row["found_at_tumor"], row["shown_at_tumor"]) == (False, False)
    row, _ = evaluate_image(rec, np.zeros((20, 20)), possible_tumor=True)
    assert (row["found_at_tumor"], row["shown_at_tumor"]) == (False, None)
    with pytest.raises(ValueError, match=r"possible tumor mask is \(10, 10\)"):
        evaluate_image(rec, elsewhere, possible_tumor=True, possible_mask=np.ones((10, 10)))
    free, _ = evaluate_image(record(6, []), elsewhere)  # no box: nothing to be at
    assert (free["found_at_tumor"], free["shown_at_tumor"]) == (None, None)
    # the split: five tumor images, two of them with their tumor only elsewhere, one with nothing at all
    rows = [evaluate_image(rec, m, possible_tumor=p is not None, possible_mask=p)[0] for m, p in (
        (at_box, None), (elsewhere, None), (elsewhere, at_box), (np.zeros((20, 20)), elsewhere),
        (np.zeros((20, 20)), None),
    )]  # fmt: skip
    s = summarize([*rows, free])
    assert (s["tumor_images_found_rate"], s["tumor_images_nothing_shown"]) == (3 / 5, 1)
    assert (s["tumor_images_found_at_tumor"], s["tumor_images_found_at_tumor_rate"]) == (1, 1 / 5)
    assert (s["tumor_images_nothing_shown_at_tumor"], s["tumor_images_nothing_shown_at_tumor_rate"]) == (3, 3 / 5)
    unknown = evaluate_image(rec, np.zeros((20, 20)), possible_tumor=True)[0]
    assert summarize([rows[0], unknown])["tumor_images_nothing_shown_at_tumor"] is None


def _row(n_gt, n_pred, tp, fp, fn, containment, dice, iou, box, best, fill, outside, outline, possible, unusual):
    return dict(zip(ROW_FIELDS, (
        "x.png", 0, dice, iou, box, best, n_gt, n_pred, tp, fp, fn, *containment, fill, outside, outline,
        n_pred > 0, possible, 0.5, unusual,
    )))  # fmt: skip


def test_summary_of_hand_made_rows():
    a = _row(2, 2, 1, 1, 1, (0, 2, 2), 0.5, 0.25, 0.4, 0.6, 0.75, 0.1, 0.8, True, True)  # found, a possible one too
    b = _row(1, 0, 0, 0, 1, (0, 0, 1), 0.0, 0.0, 0.0, 0.0, 0.0, None, 0.2, True, False)  # only a possible tumor
    c = _row(2, 0, 0, 0, 2, (0, 0, 2), 0.0, 0.0, 0.0, 0.0, 0.0, None, None, False, None)  # nothing shown
    d = _row(0, 1, 0, 1, 0, (0, 1, 0), 0.0, 0.0, 0.0, 0.0, None, 1.0, None, True, False)  # tumor-free: a false one
    e = _row(0, 0, 0, 0, 0, (0, 0, 0), 1.0, 1.0, 1.0, 1.0, None, None, None, True, False)  # tumor-free: a possible one
    f = _row(0, 0, 0, 0, 0, (0, 0, 0), 1.0, 1.0, 1.0, 1.0, None, None, None, False, False)  # tumor-free: nothing
    g = _row(1, 1, 1, 0, 0, (1, 0, 0), 0.9, 0.8, 0.7, 0.7, 1.0, 0.0, 0.6, True, False)  # found, a possible one too
    h = _row(1, 0, 0, 0, 1, (0, 0, 1), 0.0, 0.0, 0.0, 0.0, 0.0, None, None, True, False)  # only a possible tumor
    i = _row(0, 2, 0, 2, 0, (0, 2, 0), 0.0, 0.0, 0.0, 0.0, None, 0.5, None, False, False)  # tumor-free: two false
    j = _row(0, 0, 0, 0, 0, (0, 0, 0), 1.0, 1.0, 1.0, 1.0, None, None, None, True, False)  # tumor-free: a possible one
    # five tumor images (a, b, c, g, h), five tumor-free ones; the counts are chosen so that no two rules agree
    s = summarize([a, b, c, d, e, f, g, h, i, j])
    expected = {
        "n_images": 10, "n_tumor_images": 5, "n_tumor_free_images": 5, "n_gt_boxes": 7, "n_pred_components": 6,
        "dice_mean": 0.44, "dice_median": 0.25, "iou_mean": 0.405, "iou_median": 0.125,
        "box_iou_mean": 0.41, "box_iou_median": 0.2, "box_iou_best_match_mean": 0.43, "box_iou_best_match_median": 0.3,
        "fill_ratio_mean": 1.75 / 5, "fill_ratio_median": 0.0,  # over the five images with a box
        "outside_fraction_mean": 1.6 / 4, "outside_fraction_median": 0.3,  # over the four with a prediction
        "outline_dice_mean": 1.6 / 3, "outline_dice_median": 0.6, "n_outlines": 3,
        "dice_mean_tumor_images": 1.4 / 5,
        "detection_iou_threshold": 0.5, "detection_tp": 2, "detection_fp": 4, "detection_fn": 5,
        "detection_precision": 2 / 6, "detection_recall": 2 / 7, "detection_f1": 4 / 13,
        "containment_min_inside": 0.5, "containment_tp": 1, "containment_fp": 5, "containment_fn": 6,
        "containment_precision": 1 / 6, "containment_recall": 1 / 7, "containment_f1": 2 / 13,
        "tumor_free_fp_components": 3, "tumor_free_images_with_fp": 2,
        "tumor_free_fp_rate": 2 / 5,  # of the five tumor-free images, not of all ten
        "n_images_tumor_found": 4, "n_images_no_tumor_found": 6,
        "n_images_possible_tumor": 4, "n_images_nothing_shown": 2,  # a found tumor outranks a possible one
        "tumor_images_found_rate": 2 / 5, "tumor_images_nothing_shown": 1, "tumor_images_nothing_shown_rate": 1 / 5,
        "tumor_free_images_with_possible": 2, "components_per_tumor_image_mean": 3 / 5,
        "n_images_input_unusual": 1,
        # rows that do not say where their tumor lies (written before found_at_tumor): unknown, not 0
        "tumor_images_found_at_tumor": None, "tumor_images_found_at_tumor_rate": None,
        "tumor_images_nothing_shown_at_tumor": None, "tumor_images_nothing_shown_at_tumor_rate": None,
    }  # fmt: skip
    assert s == pytest.approx(expected)
    assert not any(k.endswith("_AP") for k in s), "no AP without the ground truth"
    few = summarize([a, b, e, g, f])
    assert (few["n_images"], few["n_images_tumor_found"], few["n_images_no_tumor_found"]) == (5, 2, 3)
    medians = [few[f"{k}_median"] for k in ("dice", "iou", "box_iou", "box_iou_best_match")]
    assert medians == pytest.approx([0.9, 0.8, 0.7, 0.7])
    none = summarize([])
    assert none["n_images"] == 0 and none["dice_mean"] is None and none["dice_median"] is None
    assert none["tumor_free_fp_rate"] is None and none["tumor_images_found_rate"] is None
    assert none["tumor_images_nothing_shown_rate"] is None and none["components_per_tumor_image_mean"] is None
    assert none["detection_f1"] == 1.0 and none["n_images_nothing_shown"] == 0


def test_outline_paths_and_the_files_of_an_evaluation(tmp_path: Path):
    (tmp_path / "outlines").mkdir()
    (tmp_path / "outlines" / "scan.png").write_bytes(b"")
    assert outline_path(tmp_path / "outlines", "/data/scan.jpg") == str(tmp_path / "outlines" / "scan.png")
    assert outline_path(tmp_path / "outlines", "/data/other.jpg") is None and outline_path(None, "scan.jpg") is None
    check_outlines_dir(None)
    check_outlines_dir(tmp_path / "outlines")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: outline folder not found"):
        check_outlines_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="outline folder not found"):
        check_outlines_dir(tmp_path / "outlines" / "scan.png")  # a file is no folder

    # an outline that is a symbolic link is found, and the folder refused before any work, naming it
    links = tmp_path / "links"
    links.mkdir()
    (links / "a.png").write_bytes(b"")
    (links / "notes.txt").symlink_to("/dev/zero")  # not an outline: left alone
    check_outlines_dir(links)
    (links / "c.PNG").symlink_to(links / "a.png")
    with pytest.raises(ValueError, match=re.escape(f"{links / 'c.PNG'}: outline is a symbolic link: refused")):
        check_outlines_dir(links)
    for more, name in ((1, "b.png"), (2, "d.png")):
        (links / name).symlink_to("/dev/zero")
        said = f"{links / 'b.png'}: outline is a symbolic link (and {more} more): "
        with pytest.raises(ValueError, match=re.escape(said)):
            check_outlines_dir(links)
    assert outline_path(links, "/data/b.jpg") == str(links / "b.png"), "there, to be refused when read"

    write_json({"a": 1, "b": [None]}, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == '{\n  "a": 1,\n  "b": [\n    null\n  ]\n}\n'
    row = dict(zip(ROW_FIELDS, range(len(ROW_FIELDS))), outline_dice=None, extra="dropped")
    write_rows([row], tmp_path / "rows.csv")
    lines = (tmp_path / "rows.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(ROW_FIELDS)
    cells = dict(zip(ROW_FIELDS, lines[1].split(",")))
    assert cells["outline_dice"] == "" and cells["dice"] == "2" and len(lines) == 2 and "dropped" not in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links", "outlines", "rows.csv", "s.json"]


# --------------------------------------------------------------------------- COCO results and AP


def synthetic_coco() -> dict:
    """Two 40x40 images, three boxes; categories 1 and 2 both mean Tumor (as in the dataset)."""

    def ann(aid, iid, cat, x, y, w, h):
        return {
            "id": aid,
            "image_id": iid,
            "category_id": cat,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 0,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        }

    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 40, "width": 40},
            {"id": 2, "file_name": "b.jpg", "height": 40, "width": 40},
        ],
        "annotations": [ann(1, 1, 1, 2, 3, 10, 12), ann(2, 1, 2, 20, 20, 15, 8), ann(3, 2, 2, 5, 5, 20, 20)],
        "categories": [{"id": 0, "name": "Tumor"}, {"id": 1, "name": "0"}, {"id": 2, "name": "1"}],
    }


def gt_as_results(data: dict) -> list[dict]:
    """Rasterize each image's GT boxes as if they were a prediction."""
    results = []
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        results += to_coco_results(im["id"], rasterize_annotations(anns, im["height"], im["width"]))
    return results


def test_to_coco_results_rle_round_trip():
    mask = box_mask((30, 30), 2, 3, 4, 5) | box_mask((30, 30), 20, 20, 6, 2)
    prob = np.where(mask > 0, 0.75, 0.1).astype(np.float32)
    results = to_coco_results(9, mask, prob)
    assert len(results) == 2
    assert [r["bbox"] for r in results] == [[2.0, 3.0, 4.0, 5.0], [20.0, 20.0, 6.0, 2.0]]
    assert all(r["image_id"] == 9 and r["category_id"] == 1 and r["score"] == pytest.approx(0.75) for r in results)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    decoded = sum(mask_utils.decode(r["segmentation"]) for r in results)
    np.testing.assert_array_equal(decoded, mask)
    json.loads(json.dumps(results))
    assert to_coco_results(1, np.zeros((5, 5))) == []


def test_coco_ap_perfect_on_synthetic_without_touching_inputs():
    data = synthetic_coco()
    results = gt_as_results(data)
    data_before, results_before = copy.deepcopy(data), copy.deepcopy(results)
    assert coco_ap(data, results, "bbox") == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert coco_ap(data, results, "segm") == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert data == data_before and results == results_before  # category rewrite happened on a copy
    # only category 2 counts as tumor: the category-1 box's detection becomes a false positive
    assert coco_ap(data, results, "bbox", category_ids=[2])["AP"] < 1.0


def test_coco_ap_without_predictions_or_ground_truth():
    data = synthetic_coco()
    assert coco_ap(data, [], "bbox") == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert coco_ap(data, [], "segm") == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    no_gt = {**data, "annotations": []}
    assert coco_ap(no_gt, gt_as_results(data), "bbox") == {"AP": None, "AP50": None, "AP75": None}
    with pytest.raises(ValueError, match="lacks"):
        coco_ap(data, [{**gt_as_results(data)[0], "image_id": 99}], "bbox")
    with pytest.raises(ValueError, match="iou_type"):
        coco_ap(data, [], "keypoints")


def test_segm_ap_is_capped_for_outline_shaped_masks_against_boxes():
    data = synthetic_coco()
    data["images"], data["annotations"] = data["images"][1:], data["annotations"][2:]  # one 20x20 box
    outline = box_mask((40, 40), 5, 5, 20, 11)  # 220 px inside the 400 px box: mask IoU 0.55
    results = to_coco_results(2, outline)
    ap = coco_ap(data, results, "segm")
    # passes IoU thresholds 0.50 and 0.55 of ten -> AP 0.2, though the detection is in the right place
    assert ap == {"AP": pytest.approx(0.2), "AP50": pytest.approx(1.0), "AP75": 0.0}


def test_coco_ap_perfect_on_real_sample_split():
    data = load_coco_json(SAMPLE_SPLIT / ANNOTATION_FILE)
    results = gt_as_results(data)
    assert len(results) == len(data["annotations"]) == 12
    assert coco_ap(SAMPLE_SPLIT / ANNOTATION_FILE, results, "bbox") == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert coco_ap(data, results, "segm") == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert coco_ap(data, [], "bbox")["AP"] == 0.0


def _size(rec: dict) -> dict:
    return {"height": rec["label"]["height"], "width": rec["label"]["width"]}


def test_the_ground_truth_as_prediction_scores_one_on_the_sample_split():
    records = coco_to_datalist(SAMPLE_SPLIT)
    preds = [rasterize_annotations(r["label"]["annotations"], **_size(r)) for r in records]
    ev = evaluate_predictions(records, preds, SAMPLE_OUTLINES)
    s = ev.summary
    for key in ("dice_mean", "box_iou_mean", "fill_ratio_mean", "detection_f1", "containment_f1", "bbox_AP", "segm_AP"):
        assert s[key] == 1.0, key
    assert s["outside_fraction_mean"] == 0.0 and s["n_outlines"] == 12
    # the loose boxes against the true outlines (NOTICE.md): each image's Dice counted here in numpy from
    # the outline PNG, then the split's mean and median as measured (0.5679 and 0.5742)
    by_name = {row["file_name"]: row["outline_dice"] for row in ev.rows}
    dices = []
    for rec, pred in zip(records, preds):
        name = Path(rec["image"]).name
        truth = np.asarray(Image.open(SAMPLE_OUTLINES / (Path(name).stem + ".png"))) > 0
        box = pred > 0
        dices.append(2 * int((box & truth).sum()) / (int(box.sum()) + int(truth.sum())))
        assert by_name[name] == pytest.approx(dices[-1], abs=1e-6), name
    assert s["outline_dice_mean"] == pytest.approx(float(np.mean(dices)), abs=1e-6)
    assert round(s["outline_dice_mean"], 4) == 0.5679 and round(s["outline_dice_median"], 4) == 0.5742


# --------------------------------------------------------------------------- a real predictor on the sample split


def test_evaluate_split_refuses_a_missing_outline_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="outline folder not found"):
        evaluate_split(SAMPLE_SPLIT, tmp_path / "out", outlines_dir=tmp_path / "no_outlines")
    assert not (tmp_path / "out").exists()


def test_evaluate_split_writes_every_output(smoke_model: Path, tmp_path: Path):
    out = tmp_path / "eval"
    summary = evaluate_split(
        SAMPLE_SPLIT, out, ckpt_path=smoke_model, config_files=[SMOKE_NETWORK], outlines_dir=SAMPLE_OUTLINES
    ).summary

    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert summary["n_images"] == 12 and summary["n_outlines"] == 12
    # every figure is what the metric gives for the masks the run wrote: recomputed here from the PNGs
    records = coco_to_datalist(SAMPLE_SPLIT)
    written = [np.asarray(Image.open(out / MASKS_DIR / (Path(r["image"]).stem + ".png"))) > 0 for r in records]
    again = evaluate_predictions(records, written, SAMPLE_OUTLINES).summary
    for key, value in again.items():
        if "_AP" in key:  # scored with the probabilities in the run, 1.0 per component here
            continue
        assert summary[key] == pytest.approx(value, abs=1e-9), key
    dice = []  # counted here in numpy, not with the metric under test: every sample image has a box
    for r, m in zip(records, written):
        box = rasterize_annotations(r["label"]["annotations"], *m.shape) > 0
        dice.append(2 * int((m & box).sum()) / (int(m.sum()) + int(box.sum())))
    assert summary["dice_mean"] == pytest.approx(float(np.mean(dice)), abs=1e-6)

    with open(out / PER_IMAGE_FILE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and list(rows[0]) == list(ROW_FIELDS)
    for row in rows:
        for key in ("dice", "iou", "box_iou", "box_iou_best_match", "fill_ratio", "outline_dice"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert int(row["tp"]) + int(row["fn"]) == int(row["n_gt"]) == 1
        assert int(row["tp"]) + int(row["fp"]) == int(row["n_pred"])

    results = json.loads((out / RESULTS_FILE).read_text())
    assert len(results) == summary["n_pred_components"]
    image_ids = {im["id"] for im in load_coco_json(SAMPLE_SPLIT / ANNOTATION_FILE)["images"]}
    for r in results:
        assert r["image_id"] in image_ids and 0.0 <= r["score"] <= 1.0 and len(r["bbox"]) == 4

    masks = sorted((out / MASKS_DIR).glob("*.png"))
    assert [m.stem for m in masks] == sorted(p.stem for p in SAMPLE_SPLIT.glob("*.jpg"))
    for m in masks:
        arr = np.asarray(Image.open(m))
        assert arr.shape == (640, 640) and set(np.unique(arr)) <= {0, 255}

    with Image.open(out / GALLERY_FILE) as im:
        assert im.size == (900, 40 + 3 * 340)
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


def test_a_failed_evaluation_leaves_no_half_filled_masks_folder(smoke_model, tmp_path):
    """The fifth image of a copy of the split is unreadable: the run fails on it, and neither a first
    run nor a rerun over finished masks leaves a half-filled or changed masks folder."""
    import shutil

    split = tmp_path / "valid"
    shutil.copytree(SAMPLE_SPLIT, split)
    fifth = sorted(split.glob("*.jpg"))[4]
    good = fifth.read_bytes()
    fifth.write_bytes(good[: len(good) // 4])  # a truncated JPEG
    options = {"ckpt_path": smoke_model, "config_files": [SMOKE_NETWORK], "gallery": False}
    out = tmp_path / "out"
    with pytest.raises(Exception, match=fifth.name):
        evaluate_split(split, out, overlays=True, **options)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], "no masks, no temporary folders"
    # a finished run publishes its masks; a later failed run leaves them as they were
    fifth.write_bytes(good)
    evaluate_split(split, out, **options)
    before = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    assert len(before) == 12
    fifth.write_bytes(good[: len(good) // 4])
    with pytest.raises(Exception, match=fifth.name):
        evaluate_split(split, out, **options)
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_truncated_outline_png_is_named(tmp_path, capsys, smoke_model):
    import shutil

    from brainseg_monai.cli import main
    from brainseg_monai.metrics import load_outline

    outlines = tmp_path / "outlines"
    shutil.copytree(SAMPLE_OUTLINES, outlines)
    victim = sorted(outlines.glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 3])
    with pytest.raises(ValueError, match=f"{victim}: outline mask is unreadable or truncated"):
        load_outline(victim)
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(tmp_path / "out"), "--outlines", str(outlines)]
    assert main([*args, "--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert str(victim) in err and "truncated" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "masks").exists()


@pytest.mark.parametrize("structure", [None, "eight"])
def test_fill_holes_is_scipy_s_on_random_masks_and_head_masks(structure):
    from scipy import ndimage

    from scripts.components import EIGHT_CONNECTED, fill_holes

    st = EIGHT_CONNECTED if structure == "eight" else None
    rng = np.random.default_rng(7)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        assert np.array_equal(fill_holes(mask, st), ndimage.binary_fill_holes(mask, structure=st))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole
    ring[0, 0] = True  # a corner pixel: the background around it still reaches the edge
    assert fill_holes(ring, st)[4, 4] and not fill_holes(ring, st)[1, 1]
    cube = np.ones((3, 3, 3), bool)
    cube[1, 1, 1] = False
    assert fill_holes(cube).all(), "a 3D mask goes to scipy"
