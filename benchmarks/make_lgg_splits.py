"""Split the TCGA-LGG volumes by patient and write the training cases' slices as two COCO splits.

    python benchmarks/make_lgg_splits.py ../shared/data/lgg_volumes OUTPUT_DIR

Writes ``OUTPUT_DIR/tumor_free`` (a COCO split of the training cases' slices at least
``--min-distance`` slices from any masked slice, no annotation: ``brainseg train --recipe
--tumor-free-split`` takes it), ``OUTPUT_DIR/tumor_boxes`` (below: ``--tumor-box-split``) and
``OUTPUT_DIR/cases.json`` (which patients train, which are
held apart to choose the operating point and to measure). The split is by patient, every
``--tune-every``-th case of each institution in case order held apart, so no slice of a
held-apart patient is ever trained on. The FLAIR masks only choose slices and give each tumor
slice its box: they are never outlines on T1 contrast images.

``tumor_boxes`` holds the training cases' tumor slices where the tumor shows on T1 contrast (the
case passes ``lgg_volumes.t1c_visible`` and the slice's own contrast,
``lgg_volumes.t1c_slice_contrast``, is at least ``--min-contrast``; at least ``--min-area`` masked
pixels), each with one box: the bounding box of the slice's FLAIR extent. The box is loose
supervision, as the COCO boxes are (``configs/box_supervised.json``); the extent's outline is
never written. Both splits' slices are windowed alike (``scripts.tumor_free.window_volume``), so
that nothing but their content tells a tumor slice from a tumor-free one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from lgg_volumes import load_cases, t1c_slice_contrast, t1c_visible

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.io import atomic_output, check_output_dir
from scripts.tumor_free import window_volume, write_split_annotations, write_volume_tumor_free_split


def split_cases(cases_csv: str, tune_every: int = 3) -> dict[str, list[str]]:
    """``{"train": [...], "tune": [...]}``: every ``tune_every``-th case of each institution held apart."""
    by_institution: dict[str, list[str]] = defaultdict(list)
    with open(cases_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_institution[row["institution"]].append(row["case"])
    split: dict[str, list[str]] = {"train": [], "tune": []}
    for institution in sorted(by_institution):
        for i, case in enumerate(sorted(by_institution[institution])):
            split["tune" if i % tune_every == tune_every - 1 else "train"].append(case)
    return split


def write_tumor_box_split(
    lgg_dir: str, cases: list[str], output_dir: str, min_area: int = 100, min_contrast: float = 0.06
) -> dict[str, int]:
    """The T1c-visible tumor slices of ``cases`` with their FLAIR extent's bounding box (see the module's doc)."""
    from PIL import Image

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for case in load_cases(lgg_dir, cases):
        if not case.mask.any() or not t1c_visible(case, min_contrast):
            continue
        grey_volume = window_volume(case.volume)
        for k, mask in enumerate(case.mask):
            if mask.sum() < min_area or t1c_slice_contrast(case.volume[k], mask) < min_contrast:
                continue
            name = f"{case.name}_{k:03d}.png"
            with atomic_output(out / name) as tmp:
                Image.fromarray(grey_volume[k], mode="L").save(tmp, format="PNG")
            images.append({"id": len(images) + 1, "file_name": name, "height": mask.shape[0], "width": mask.shape[1]})
            rows, cols = np.nonzero(mask)
            x0, y0, x1, y1 = (float(v) for v in (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": len(images),
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    "iscrowd": 0,
                }
            )
    write_split_annotations(
        out, images, "T1c-visible tumor slices of TCGA-LGG training cases, boxes of the FLAIR extent", annotations
    )
    return {"n_tumor_box_slices": len(images)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir", help="the folder holding t1c/, masks/ and cases.csv")
    ap.add_argument("output_dir")
    ap.add_argument("--min-distance", type=int, default=3, help="slices this close to a masked slice are left out")
    ap.add_argument("--tune-every", type=int, default=3, help="hold apart every N-th case of each institution")
    ap.add_argument("--min-area", type=int, default=100, help="tumor_boxes: fewest masked pixels on a slice")
    ap.add_argument("--min-contrast", type=float, default=0.06, help="tumor_boxes: least T1c contrast")
    args = ap.parse_args()
    check_output_dir(args.output_dir, {"lgg_dir": args.lgg_dir})  # the one output rule, before anything is written
    split = split_cases(os.path.join(args.lgg_dir, "cases.csv"), args.tune_every)
    os.makedirs(args.output_dir, exist_ok=True)
    with atomic_output(os.path.join(args.output_dir, "cases.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(split, f, indent=4)
    pairs = [
        (os.path.join(args.lgg_dir, "t1c", f"{c}.nii.gz"), os.path.join(args.lgg_dir, "masks", f"{c}.nii.gz"))
        for c in split["train"]
    ]
    result = write_volume_tumor_free_split(pairs, os.path.join(args.output_dir, "tumor_free"), args.min_distance)
    out_boxes = os.path.join(args.output_dir, "tumor_boxes")
    result |= write_tumor_box_split(args.lgg_dir, split["train"], out_boxes, args.min_area, args.min_contrast)
    print(
        json.dumps(
            {"train_cases": len(split["train"]), "tune_cases": len(split["tune"])}
            | {k: result[k] for k in ("n_slices", "n_written", "n_tumor_box_slices")}
        )
    )


if __name__ == "__main__":
    main()
