"""Where the false tumors on synthetic tumor-free slices lie: what the synthetic false-tumor rate is made of.

    python benchmarks/synthetic_false_tumors.py DATASET/valid TUMOR_FREE_SPLIT [--outlines DATASET/valid_outlines]
        [--bundle bundle] [--model PATH] [--per-slice] [--json results.json]

``TUMOR_FREE_SPLIT`` is made from ``DATASET/valid`` by ``benchmarks/make_tumor_free_split.py``:
each slice's tumor box refilled from the mirrored hemisphere, or the slice cropped away from it.
Both the synthetic slice and its source run through the bundle as ``brainseg segment`` runs
them (:class:`~scripts.predictor.BundlePredictor`, the bundle's operating point), and each
confident tumor drawn on a synthetic slice is put in the first class it fits:

- **cropped**: the slice is a zoomed crop (more than half its pixels differ from the source);
- **on the tumor left in place**: with ``--outlines``, at least a fifth of it lies on pixels of
  the expert outline that the refill did not change (the box missed part of the tumor);
- **in the refilled region**: at least half of it lies where the refill changed the slice, or in
  the tumor's box;
- **drawn on the source too**: at least half of its pixels reach the bundle's pixel threshold on
  the source slice as well (the network sees the same thing with the tumor present);
- **new elsewhere**: the rest, healthy tissue the network calls tumor once the tumor is gone.

Printed: the share of synthetic slices with a confident tumor, and of each class.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

CLASSES = (
    "cropped",
    "on the tumor left in place",
    "in the refilled region",
    "drawn on the source too",
    "new elsewhere",
)
#: grey levels: the synthetic PNG is the source's grey rounded, so an unchanged pixel differs by at most 0.5
CHANGED = 1.0


def _grey(path: str) -> np.ndarray:
    from scripts.io import open_image

    with open_image(path) as im:
        return np.asarray(im.convert("F"), dtype=np.float32)


def _boxes(record: Mapping[str, Any]) -> np.ndarray:
    from scripts.metrics.detection import box_masks

    label = record["label"]
    masks = box_masks([ann["bbox"] for ann in label["annotations"]], int(label["height"]), int(label["width"]))
    return np.any(masks, axis=0) if masks else np.zeros((int(label["height"]), int(label["width"])), dtype=bool)


def classify(
    tumor: np.ndarray,
    synthetic: np.ndarray,
    source: np.ndarray,
    boxes: np.ndarray,
    source_probability: np.ndarray,
    threshold: float,
    outline: np.ndarray | None = None,
) -> str:
    """The class (:data:`CLASSES`) of a confident tumor drawn on a synthetic tumor-free slice.

    Args:
        tumor: (H, W) the tumor drawn on the synthetic slice.
        synthetic: (H, W) the synthetic slice's grey values.
        source: (H, W) its source slice's grey values.
        boxes: (H, W) the source's tumor boxes.
        source_probability: (H, W) the network's tumor probability on the source slice.
        threshold: the bundle's pixel threshold.
        outline: (H, W) the expert outline of the source's tumor, or None.
    """
    tumor = np.asarray(tumor) > 0
    changed = np.abs(np.asarray(synthetic, np.float32) - np.asarray(source, np.float32)) > CHANGED
    if synthetic.shape != source.shape or changed.mean() > 0.5:
        return CLASSES[0]
    area = max(1, int(tumor.sum()))
    if outline is not None and (tumor & outline & ~changed).sum() / area >= 0.2:
        return CLASSES[1]
    if (tumor & (changed | boxes)).sum() / area >= 0.5:
        return CLASSES[2]
    if (tumor & (source_probability >= threshold)).sum() / area >= 0.5:
        return CLASSES[3]
    return CLASSES[4]


def classify_synthetic(
    predictor: Any, record: Mapping[str, Any], source: Mapping[str, Any], outlines_dir: str | None, threshold: float
) -> tuple[Any, str | None, np.ndarray | None]:
    """Segment a synthetic tumor-free slice and class its confident tumor (:func:`classify`).

    Args:
        predictor: the bundle's predictor (:class:`~scripts.predictor.BundlePredictor`).
        record: the synthetic slice's datalist record.
        source: the record of the slice it was made from.
        outlines_dir: expert outlines of the source split, or None.
        threshold: the bundle's pixel threshold.

    Returns:
        ``(prediction, class, outline)``: the synthetic slice's prediction; the class, None when no confident
        tumor was drawn; the source's expert outline (None without one, or when no tumor was drawn).
    """
    from scripts.metrics.evaluation import outline_path
    from scripts.metrics.pixel import load_outline

    prediction = predictor.predict_file(record["image"], details=True)
    if not prediction.tumor_found:
        return prediction, None, None
    _, source_probability = predictor.predict_file(source["image"], with_probability=True)
    path = outline_path(outlines_dir, source["image"])
    outline = None if path is None else load_outline(path)
    kind = classify(
        prediction.mask,
        _grey(record["image"]),
        _grey(source["image"]),
        _boxes(source),
        source_probability,
        threshold,
        outline,
    )
    return prediction, kind, outline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source_split", help="the tumor split the synthetic slices were made from (DATASET/valid)")
    ap.add_argument("tumor_free_split", help="benchmarks/make_tumor_free_split.py's output for it")
    ap.add_argument("--outlines", help="expert outlines of the source split, <image stem>.png")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--model", help="first-stage weights (default: the bundle's)")
    ap.add_argument("--per-slice", action="store_true", help="print one row per slice with a false tumor")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    os.environ["BRAINSEG_BUNDLE"] = os.path.abspath(args.bundle)
    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
    from scripts.coco import coco_to_datalist
    from scripts.io import image_stem
    from scripts.metrics.evaluation import check_outlines_dir
    from scripts.predictor import BundlePredictor

    check_outlines_dir(args.outlines)
    predictor = BundlePredictor(args.bundle, args.model)
    threshold = float(predictor.parser.get_parsed_content("threshold"))
    sources = {image_stem(r["image"]): r for r in coco_to_datalist(args.source_split)}
    synthetic = coco_to_datalist(args.tumor_free_split)
    counts: Counter[str] = Counter()
    rows = []
    for record in synthetic:  # all checked before any work
        stem = image_stem(record["image"])
        if stem not in sources:
            raise SystemExit(f"{record['image']}: no image {stem}.* in {args.source_split}: not made from that split")
    for record in synthetic:
        found, kind, _ = classify_synthetic(
            predictor, record, sources[image_stem(record["image"])], args.outlines, threshold
        )
        if kind is None:
            continue
        counts[kind] += 1
        rows.append({"image": os.path.basename(record["image"]), "class": kind, "score": round(found.tumor_score, 3)})
        if args.per_slice:
            print(json.dumps(rows[-1]), flush=True)
    n = len(synthetic)
    summary = {
        "synthetic_slices": n,
        "with_confident_tumor": len(rows),
        "rate": round(len(rows) / max(1, n), 3),
        "classes": {k: {"slices": counts[k], "rate": round(counts[k] / max(1, n), 3)} for k in CLASSES},
    }
    print(f"{len(rows)} of {n} synthetic tumor-free slices ({summary['rate']:.1%}) get a confident tumor:")
    for k in CLASSES:
        print(f"  {k:<28} {counts[k]:>4} ({counts[k] / max(1, n):.1%} of the slices)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
