"""Whole T1 contrast volumes from other hospitals: false tumors on real tumor-free slices, tumors found per volume.

    python benchmarks/lgg_volumes.py LGG_DIR [--cases cases.json --split tune] [--bundle bundle]
        [--model PATH] [--grid] [--masks-dir DIR]

``LGG_DIR`` holds ``t1c/<case>.nii.gz``, ``masks/<case>.nii.gz`` (the FLAIR extent, 0/1) and
``cases.csv`` (see its NOTICE.md). The masks say *which slices hold no tumor* and *where a tumor
may be*; they are never outlines on the T1 contrast images. Figures:

- **tumor-free slices**: slices at least 3 slices from every masked slice
  (:func:`scripts.tumor_free.tumor_free_slice_indices`); the fraction with a confident tumor
  ("tumor"), with a possible tumor, and the confident false tumors per volume;
- **tumor volumes found**: a confident tumor on a masked slice that touches the mask (dilated by
  10 pixels, since the FLAIR extent and the enhancing part differ); "shown": a tumor or a possible
  tumor does. Counted over all tumor volumes and over those whose tumor shows on T1 contrast
  (:func:`t1c_visible`: the mask's T1 contrast intensities differ from the brain around it).

By default it runs the bundle's inference in process (:class:`~scripts.predictor.BundlePredictor`,
its ``volume_rule`` and operating points) on each volume, as ``brainseg segment`` does. With
``--masks-dir`` it scores the label maps a run already wrote (``python -m monai.bundle run
--config_file configs/inference.json --dataset_dir VOLUMES --output_dir DIR``: 1 tumor, 2 possible
tumor). With ``--grid`` it runs the first network once per volume and prints the figures for a grid
of operating points and volume rules (choose them on held-apart cases, never on the cases measured).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.io import read_medical_image
from scripts.tumor_free import tumor_free_slice_indices
from scripts.verdict import POSSIBLE_TUMOR_LABEL, TUMOR_LABEL, NeighbourSupport

TOUCH_DILATION = 10


@dataclass
class Case:
    name: str
    volume: np.ndarray  # (k, j, i)
    mask: np.ndarray  # (k, j, i) 0/1 FLAIR extent


def load_cases(lgg_dir: str, names: Sequence[str] | None) -> list[Case]:
    if names is None:
        with open(os.path.join(lgg_dir, "cases.csv"), newline="", encoding="utf-8") as f:
            names = [row["case"] for row in csv.DictReader(f)]
    cases = []
    for name in names:
        volume, _ = read_medical_image(os.path.join(lgg_dir, "t1c", f"{name}.nii.gz"))
        mask, _ = read_medical_image(os.path.join(lgg_dir, "masks", f"{name}.nii.gz"))
        cases.append(Case(name, volume, mask > 0))
    return cases


def t1c_slice_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """How much a slice's tumor differs from the same place in the other hemisphere on T1 contrast; 0 if unknown.

    The T1 contrast intensities inside ``mask`` (less its overlap with its mirror image about the
    head's left-right midline, the column axis here) against those of its mirror image: their
    earth mover's distance as a fraction of the head's 1-99 percentile range. 0 when either side
    has fewer than 20 pixels in the head.
    """
    head = ndimage.binary_fill_holes(image > np.percentile(image, 99) * 0.1)
    cols = np.nonzero(head.any(axis=0))[0]
    centre = (cols.min() + cols.max()) / 2.0 if cols.size else (image.shape[1] - 1) / 2.0
    src = np.clip(np.rint(2 * centre - np.arange(image.shape[1])).astype(int), 0, image.shape[1] - 1)
    mirror = mask[:, src]
    inside, opposite = mask & ~mirror & head, mirror & ~mask & head
    if inside.sum() < 20 or opposite.sum() < 20:
        return 0.0
    low, high = np.percentile(image[head], [1, 99])
    return float(wasserstein_distance(image[inside], image[opposite])) / max(float(high - low), 1e-6)


def t1c_contrast(case: Case) -> float:
    """:func:`t1c_slice_contrast` on the masked slice of largest extent (see :func:`t1c_visible`); 0 without one."""
    areas = case.mask.reshape(case.mask.shape[0], -1).sum(axis=1)
    if areas.max() == 0:
        return 0.0
    k = int(np.argmax(areas))
    return t1c_slice_contrast(case.volume[k], case.mask[k])


def t1c_visible(case: Case, min_contrast: float = 0.06) -> bool:
    """Does the tumor show on T1 contrast? Its intensities differ from the same place in the other hemisphere.

    On the masked slice with the largest extent, the T1 contrast intensities inside the mask (less
    its overlap with its mirror image about the head's left-right midline) are compared with those
    of its mirror image: their earth mover's distance, as a fraction of the head's 1-99 percentile
    range, of at least ``min_contrast`` counts as visible (brighter: enhancing; darker: a hypointense
    mass; both: a ring). A lower-grade glioma that neither enhances nor darkens is invisible on this
    sequence, whatever the FLAIR shows. Left-right is the column axis here (the volumes' x axis).
    """
    return t1c_contrast(case) >= min_contrast


def score_volume(case: Case, labels: np.ndarray) -> dict[str, Any]:
    """The figures of one volume from its label map (1 tumor, 2 possible tumor)."""
    free = tumor_free_slice_indices(case.mask, 3)
    tumor_slices = labels.reshape(labels.shape[0], -1)
    confident = (tumor_slices == TUMOR_LABEL).any(axis=1)
    possible = (tumor_slices == POSSIBLE_TUMOR_LABEL).any(axis=1) & ~confident
    near = np.stack([ndimage.binary_dilation(m, iterations=TOUCH_DILATION) if m.any() else m for m in case.mask])
    has_tumor = bool(case.mask.any())
    found = has_tumor and bool(((labels == TUMOR_LABEL) & near).any())
    shown = has_tumor and bool(((labels > 0) & near).any())
    return {
        "case": case.name,
        "n_slices": int(labels.shape[0]),
        "n_free": len(free),
        "free_confident": int(confident[free].sum()),
        "free_possible": int(possible[free].sum()),
        "tumor_volume": has_tumor,
        "t1c_visible": t1c_visible(case) if has_tumor else None,
        "t1c_contrast": round(t1c_contrast(case), 3) if has_tumor else None,
        "found": found,
        "shown": shown,
        "n_tumor_slices": int(case.mask.reshape(case.mask.shape[0], -1).any(axis=1).sum()),
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n_free = sum(r["n_free"] for r in rows)
    tumor = [r for r in rows if r["tumor_volume"]]
    visible = [r for r in tumor if r["t1c_visible"]]
    return {
        "n_volumes": len(rows),
        "n_free_slices": n_free,
        "free_confident_rate": sum(r["free_confident"] for r in rows) / max(1, n_free),
        "free_confident_per_volume": sum(r["free_confident"] for r in rows) / max(1, len(rows)),
        "free_possible_rate": sum(r["free_possible"] for r in rows) / max(1, n_free),
        "n_tumor_volumes": len(tumor),
        "found_rate": sum(r["found"] for r in tumor) / max(1, len(tumor)),
        "shown_rate": sum(r["shown"] for r in tumor) / max(1, len(tumor)),
        "n_t1c_visible": len(visible),
        "found_rate_t1c_visible": sum(r["found"] for r in visible) / max(1, len(visible)),
        "shown_rate_t1c_visible": sum(r["shown"] for r in visible) / max(1, len(visible)),
    }


def predicted_labels(predictor: Any, case: Case) -> np.ndarray:
    from scripts.volumes import predict_volume

    labels, _ = predict_volume(case.volume, predictor, axis=2, slice_reports=[])
    return labels


# ---------------------------------------------------------------------------------------------- grid


def candidates(predictor: Any, case: Case) -> list[list[tuple[float, np.ndarray]]]:
    """Every first-stage component of every slice: ``(confidence, pixels)``, for the grid."""
    from skimage.measure import label

    out = []
    for prediction in predictor.predict_arrays(list(case.volume), details=True):
        labelled = label(prediction.possible_mask > 0, connectivity=2)
        comps = []
        for c in prediction.possible_components:
            x, y, w, h = (int(v) for v in c["bbox"])
            box = labelled[y : y + h, x : x + w]
            ids, counts = np.unique(box[box > 0], return_counts=True)
            pixels = np.zeros(labelled.shape, bool)
            if ids.size:
                pixels = labelled == ids[np.argmax(counts)]
            comps.append((float(c["confidence"]), pixels))
        out.append(comps)
    return out


def grid_labels(comps: list[list[tuple[float, np.ndarray]]], shape, m: float, p: float, rule) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    reports = []
    for k, slice_comps in enumerate(comps):
        kept = [c for c in slice_comps if c[0] >= m]
        possible = [c for c in slice_comps if p <= c[0] < m]
        if kept:
            best = max(kept, key=lambda c: c[1].sum())
            labels[k][best[1]] = TUMOR_LABEL
        for _, pixels in possible:
            labels[k][pixels & (labels[k] == 0)] = POSSIBLE_TUMOR_LABEL
        reports.append(
            {
                "index": k,
                "components": [{"confidence": best[0]}] if kept else [],
                "possible_components": [{"confidence": c[0]} for c in possible],
            }
        )
    if rule is not None:
        rule.apply(labels, reports, 0)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir")
    ap.add_argument("--cases", help="a JSON of case lists (benchmarks/make_lgg_splits.py's cases.json)")
    ap.add_argument("--split", default="tune", help="which list of --cases to measure")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--model", help="first-stage weights (default: the bundle's)")
    ap.add_argument("--override", action="append", default=[], help="ID=JSON config override, e.g. min_confidence=0.6")
    ap.add_argument("--masks-dir", help="score the label maps written here instead of running the model")
    ap.add_argument("--grid", action="store_true", help="print figures over a grid of operating points")
    ap.add_argument("--per-case", action="store_true", help="print one row per case")
    args = ap.parse_args()
    names = json.load(open(args.cases, encoding="utf-8"))[args.split] if args.cases else None
    cases = load_cases(args.lgg_dir, names)
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}
    if args.masks_dir:
        rows = []
        for case in cases:
            labels, _ = read_medical_image(os.path.join(args.masks_dir, f"{case.name}.nii.gz"))
            rows.append(score_volume(case, labels.astype(np.uint8)))
        print(json.dumps(summarize(rows), indent=1))
        return
    from scripts.predictor import BundlePredictor

    if args.grid:
        predictor = BundlePredictor(
            args.bundle,
            args.model,
            overrides={**overrides, "min_confidence": 0.999, "possible_min_confidence": 0.0, "cascade": False},
        )
        cached = [(case, candidates(predictor, case)) for case in cases]
        print(
            "min_conf possible min_support standalone | free_conf free_conf/vol free_possible"
            " | found shown | vis_found vis_shown"
        )
        rules = [None] + [NeighbourSupport(s, c) for s, c in itertools.product((0.05, 0.2, 0.5), (0.7, 0.8, 1.0))]
        for m, p, rule in itertools.product((0.4, 0.45, 0.5, 0.6, 0.7), (0.3, 0.35, 0.4), rules):
            rows = [score_volume(case, grid_labels(comps, case.volume.shape, m, p, rule)) for case, comps in cached]
            s = summarize(rows)
            said = "none" if rule is None else f"{rule.min_support:.2f} {rule.standalone_confidence:.2f}"
            print(
                f"{m:.2f} {p:.2f} {said:>10} | {s['free_confident_rate']:.3f} {s['free_confident_per_volume']:.2f} "
                f"{s['free_possible_rate']:.3f} | {s['found_rate']:.3f} {s['shown_rate']:.3f} | "
                f"{s['found_rate_t1c_visible']:.3f} {s['shown_rate_t1c_visible']:.3f}"
            )
        return
    predictor = BundlePredictor(args.bundle, args.model, overrides=overrides)
    rows = [score_volume(case, predicted_labels(predictor, case)) for case in cases]
    if args.per_case:
        for r in rows:
            print(json.dumps(r))
    print(json.dumps(summarize(rows), indent=1))


if __name__ == "__main__":
    main()
