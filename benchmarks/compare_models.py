"""Side by side: two models evaluated on the same split, as figures and as one gallery.

    python benchmarks/compare_models.py EVAL_A EVAL_B --names box-trained outline --split DATASET/valid \\
        --outlines DATASET/valid_outlines --output comparison.png

EVAL_A and EVAL_B are ``brainseg evaluate`` output folders of the same split (each holds
``metrics_summary.json``, ``metrics_per_image.csv`` and ``masks/``). Prints a table of the
summary figures of both, and draws both models' contours with the COCO box and the true
outline on the same images: those where the second model gains most and least over the first
in outline Dice, and the median.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

from brainseg_monai.metrics import MASKS_DIR, PER_IMAGE_FILE, SUMMARY_FILE, annotation_box
from brainseg_monai.report import comparison_gallery
from scripts.coco import coco_to_datalist
from scripts.io import mask_output_path

FIGURES = (
    ("outline_dice_mean", "Dice vs true outlines (mean)"),
    ("outline_dice_median", "Dice vs true outlines (median)"),
    ("containment_f1", "containment F1"),
    ("fill_ratio_median", "fill ratio (median)"),
    ("outside_fraction_mean", "fraction outside boxes (mean)"),
    ("dice_mean", "Dice vs boxes (mean)"),
    ("box_iou_mean", "box IoU (mean)"),
    ("detection_f1", "detection F1 @0.5"),
    ("bbox_AP50", "COCO bbox AP50"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_a")
    ap.add_argument("eval_b")
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    ap.add_argument("--split", required=True, help="the split both were evaluated on")
    ap.add_argument("--outlines", required=True)
    ap.add_argument("--output", required=True, help="gallery PNG")
    ap.add_argument("--n", type=int, default=9, help="images in the gallery")
    args = ap.parse_args()

    summaries = [json.load(open(os.path.join(d, SUMMARY_FILE))) for d in (args.eval_a, args.eval_b)]
    print(f"| figure | {args.names[0]} | {args.names[1]} |\n| --- | --- | --- |")
    for key, label in FIGURES:
        print(
            f"| {label} | " + " | ".join(f"{s[key]:.3f}" if s.get(key) is not None else "-" for s in summaries) + " |"
        )

    rows = [list(csv.DictReader(open(os.path.join(d, PER_IMAGE_FILE)))) for d in (args.eval_a, args.eval_b)]
    by_name = [{r["file_name"]: r for r in rs} for rs in rows]
    records = {os.path.basename(r["image"]): r for r in coco_to_datalist(args.split, validate=False)}
    names = [n for n in by_name[1] if by_name[1][n]["outline_dice"] not in ("", "None") and n in by_name[0]]
    gain = np.array([float(by_name[1][n]["outline_dice"]) - float(by_name[0][n]["outline_dice"]) for n in names])
    order = np.argsort(gain)
    k = args.n // 3
    mid = len(order) // 2
    picked = [names[i] for i in list(order[::-1][:k]) + list(order[mid - k // 2 : mid - k // 2 + k]) + list(order[:k])]
    images = [records[n]["image"] for n in picked]
    boxes = []
    for n in picked:
        label = records[n]["label"]
        boxes.append([annotation_box(a, label["height"], label["width"]) for a in label["annotations"]])
    masks = {
        name: [mask_output_path(img, os.path.join(d, MASKS_DIR)) for img in images]
        for name, d in zip(args.names, (args.eval_a, args.eval_b))
    }
    captions = [
        f"{n[:18]}  " + "  ".join(f"{nm} {float(b[n]['outline_dice']):.2f}" for nm, b in zip(args.names, by_name))
        for n in picked
    ]
    outlines = [os.path.join(args.outlines, os.path.splitext(n)[0] + ".png") for n in picked]
    comparison_gallery(images, masks, boxes, captions, args.output, outlines=outlines)
    print(f"gallery (largest gain, median, largest loss of {args.names[1]} over {args.names[0]}): {args.output}")


if __name__ == "__main__":
    main()
