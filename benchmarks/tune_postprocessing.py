"""Choose the bundle's post-processing on a split: threshold, largest component, hole filling.

    python benchmarks/tune_postprocessing.py SPLIT_DIR [--model PATH] [--config OVERRIDE.json] [--outlines DIR]

The network runs once per image (tumor probability at the input's size through the bundle's
own ``probability_transforms``); each variant is then applied to the cached probabilities
and measured with ``brainseg_monai.metrics.evaluate_predictions``. Prints one row per variant.
Tune on the valid split only.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from monai.transforms import Compose

from brainseg_monai.coco import coco_to_datalist
from brainseg_monai.inference import BundlePredictor
from brainseg_monai.metrics import evaluate_predictions

KEYS = ("dice_mean", "box_iou_mean", "detection_f1", "containment_f1", "fill_ratio_median", "outline_dice_mean")


def mask_transforms(predictor: BundlePredictor, threshold: float, largest: bool, fill: bool) -> Compose:
    """The bundle's own ``mask_transforms`` with the variant's ids set (the config is the recipe)."""
    parser = predictor.parser
    parser["threshold"], parser["keep_largest_component"], parser["fill_holes"] = threshold, largest, fill
    parser.parse(reset=True)
    return Compose(parser.get_parsed_content("mask_transforms"))


def postprocess(transforms: Compose, prob: np.ndarray) -> np.ndarray:
    out = transforms({"pred": np.stack([1.0 - prob, prob])})
    return np.asarray(out["pred"][0]).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("--model")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--outlines")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7")
    args = ap.parse_args()
    predictor = BundlePredictor(ckpt_path=args.model, device="cpu", config_files=args.config)
    records = coco_to_datalist(args.split_dir)
    probs = [predictor.predict_file(r["image"], with_probability=True)[1] for r in records]
    rows = []
    for t, largest, fill in itertools.product(map(float, args.thresholds.split(",")), (False, True), (False, True)):
        transforms = mask_transforms(predictor, t, largest, fill)
        predictions = ((postprocess(transforms, p), p) for p in probs)
        summary = evaluate_predictions(records, predictions, args.outlines).summary
        row = {"threshold": t, "largest_component": largest, "fill_holes": fill, **{k: summary.get(k) for k in KEYS}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: (r["dice_mean"] or 0.0))
    print("best by dice_mean:", json.dumps(best))


if __name__ == "__main__":
    main()
