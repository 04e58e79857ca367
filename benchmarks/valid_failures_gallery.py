"""Pictures of what still fails on the valid split: tumors missed or outlined badly, false tumors on synthetic slices.

    python benchmarks/valid_failures_gallery.py DATASET/valid TUMOR_FREE_SPLIT OUTPUT.png
        --outlines DATASET/valid_outlines [--bundle bundle] [--model PATH] [--per-row 4] [--json results.json]

``TUMOR_FREE_SPLIT`` is made from ``DATASET/valid`` by ``benchmarks/make_tumor_free_split.py``.
Every valid slice and every synthetic tumor-free slice runs through the bundle as ``brainseg
segment`` runs it (:class:`~scripts.predictor.BundlePredictor`, the bundle's operating points),
and the picture gets one row per kind of failure, the worst first:

- **possible tumor only**: tumor slices whose tumor is shown only as a possible tumor (highest score first);
- **nothing shown**: tumor slices with neither a tumor nor a possible tumor;
- **outline far off**: tumor slices found with confidence whose outline Dice against the expert's is
  below :data:`FAR_OFF` (lowest first);
- **synthetic, in the refilled place** and **synthetic, on healthy tissue**: confident tumors drawn on
  synthetic tumor-free slices, classed as ``benchmarks/synthetic_false_tumors.py`` classes them (the
  first row: "in the refilled region"; the second: "drawn on the source too" and "new elsewhere";
  highest score first). Cropped slices are counted, not drawn.

The expert outline (green) is drawn on tumor slices, and on a synthetic slice the outline of the tumor
that was refilled away, to show where it was. Captions name the slice, its verdict and tumor score, and
the tumor type from the outlines' ``index.csv`` when it is there. Printed: how many slices each row
had to choose from.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from by_tumor_type import read_tumor_types
from synthetic_false_tumors import CLASSES, _grey, classify_synthetic

ROWS = (
    "possible tumor only",
    "nothing shown",
    "outline far off",
    "synthetic, in the refilled place",
    "synthetic, on healthy tissue",
)
#: the rows of the synthetic slices' classes (:data:`synthetic_false_tumors.CLASSES`); cropped slices are not drawn
SYNTHETIC_ROWS = {CLASSES[2]: ROWS[3], CLASSES[3]: ROWS[4], CLASSES[4]: ROWS[4]}
#: a found tumor whose outline Dice is below this is "far off" (the shipped model's median is about 0.77)
FAR_OFF = 0.5


def failure_row(verdict: str, outline_dice: float | None) -> str | None:
    """Which row a valid tumor slice belongs in (:data:`ROWS`); None when it does not fail.

    Args:
        verdict: the slice's verdict (:mod:`scripts.verdict`).
        outline_dice: its confident tumor's Dice against the expert outline; None without an outline.
    """
    from scripts.verdict import NO_TUMOR, POSSIBLE_TUMOR

    if verdict == POSSIBLE_TUMOR:
        return ROWS[0]
    if verdict == NO_TUMOR:
        return ROWS[1]
    if outline_dice is not None and outline_dice < FAR_OFF:
        return ROWS[2]
    return None


def _as_palette_png(path: str) -> None:
    """Write the picture again with a palette of 256 colours (octree: the outlines keep their colours): twenty
    640x640 slices in full colour take about 1.4 MB, and a bundle's files other than its weights stay under 1 MB."""
    from PIL import Image

    from scripts.io import atomic_output

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    with atomic_output(path) as tmp:
        palette.save(tmp, format="PNG", optimize=True)


def _predictor(bundle: str, model: str | None) -> Any:
    """The bundle's predictor, as ``brainseg segment`` builds it."""
    from scripts.predictor import BundlePredictor

    return BundlePredictor(bundle, model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source_split", help="the valid split (DATASET/valid)")
    ap.add_argument("tumor_free_split", help="benchmarks/make_tumor_free_split.py's output for it")
    ap.add_argument("output", help="the PNG to write")
    ap.add_argument("--outlines", required=True, help="expert outlines of the valid split, <image stem>.png")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--model", help="first-stage weights (default: the bundle's)")
    ap.add_argument("--per-row", type=int, default=4, help="slices per row (default 4)")
    ap.add_argument("--json", help="also write every failing slice here")
    args = ap.parse_args()
    if args.per_row < 1:
        ap.error(f"--per-row must be at least 1, not {args.per_row}")
    os.environ["BRAINSEG_BUNDLE"] = os.path.abspath(args.bundle)
    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
    from brainseg_monai.report import labelled_gallery, overlay_caption
    from scripts.coco import coco_to_datalist
    from scripts.io import check_output_file, image_stem
    from scripts.metrics.evaluation import check_outlines_dir, outline_path
    from scripts.metrics.pixel import load_outline, outline_dice

    try:
        check_outlines_dir(args.outlines)
        output = check_output_file(args.output, (args.source_split, args.tumor_free_split, args.outlines), "OUTPUT")
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    sources = {image_stem(r["image"]): r for r in coco_to_datalist(args.source_split)}
    synthetic = coco_to_datalist(args.tumor_free_split)
    for record in synthetic:  # all checked before any work
        if image_stem(record["image"]) not in sources:
            raise SystemExit(f"{record['image']}: no image {image_stem(record['image'])}.* in {args.source_split}")
    index = os.path.join(args.outlines, "index.csv")
    types = {image_stem(k): v for k, v in read_tumor_types(index).items()} if os.path.isfile(index) else {}
    predictor = _predictor(args.bundle, args.model)
    threshold = float(predictor.parser.get_parsed_content("threshold"))
    found: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}

    def candidate(record: Mapping[str, Any], prediction: Any, outline: Any, what: str, rank: float) -> dict[str, Any]:
        stem = image_stem(record["image"])
        kind = types.get(stem, "")
        caption = overlay_caption(stem, prediction.verdict, prediction.tumor_score)
        lines = [caption, ", ".join(w for w in (kind, what) if w)]
        return {
            "image": os.path.basename(record["image"]),
            "panel": (_grey(record["image"]), prediction.labels, "\n".join(w for w in lines if w)),
            "outline": outline,
            "rank": rank,
            "verdict": prediction.verdict,
            "tumor_score": round(prediction.tumor_score, 3),
            "tumor_type": kind,
        }

    for _, record in sorted(sources.items()):
        prediction = predictor.predict_file(record["image"], details=True)
        path = outline_path(args.outlines, record["image"])
        outline = None if path is None else load_outline(path)
        dice = None if outline is None else outline_dice(prediction.mask, outline)
        row = failure_row(prediction.verdict, dice)
        if row == ROWS[2]:
            found[row].append(candidate(record, prediction, outline, f"outline Dice {dice:.2f}", dice))
            found[row][-1]["outline_dice"] = round(dice, 3)
        elif row is not None:
            found[row].append(candidate(record, prediction, outline, "", -prediction.tumor_score))
    cropped = 0
    for record in synthetic:
        source = sources[image_stem(record["image"])]
        prediction, kind, outline = classify_synthetic(predictor, record, source, args.outlines, threshold)
        if kind is None:
            continue
        if kind not in SYNTHETIC_ROWS:
            cropped += kind == CLASSES[0]
            continue
        shown = outline if outline is not None and outline.shape == prediction.mask.shape else None
        found[SYNTHETIC_ROWS[kind]].append(candidate(record, prediction, shown, kind, -prediction.tumor_score))
    rows, truths = [], []
    for name in ROWS:
        chosen = sorted(found[name], key=lambda c: (c["rank"], c["image"]))[: args.per_row]
        if chosen:
            rows.append((f"{name}\n({len(found[name])} slices)", [c["panel"] for c in chosen]))
            truths.append([c["outline"] for c in chosen])
    if not rows:
        raise SystemExit("nothing fails on these slices: no picture to draw")
    labelled_gallery(rows, output, truths)
    _as_palette_png(output)
    summary = {"output": os.path.abspath(output), "rows": {name: len(found[name]) for name in ROWS}, "cropped": cropped}
    print(json.dumps(summary))
    if args.json:
        keep = ("image", "verdict", "tumor_score", "tumor_type", "outline_dice")
        failing = {name: [{k: c[k] for k in keep if k in c} for c in found[name]] for name in ROWS}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "slices": failing}, f, indent=1)


if __name__ == "__main__":
    main()
