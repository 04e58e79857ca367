"""How a model holds up on slices from other scanners and sequences: valid slices degraded or re-contrasted.

    python benchmarks/robustness.py DATASET/valid --outlines DATASET/valid_outlines [--model W] [--config C] [--n 120]

Each valid slice (the first ``--n``) is changed the way another scanner, protocol or sequence
would change it, deterministically, at its own size: gamma (darker, brighter), a smooth bias
field, Gaussian noise, blur, 3x lower resolution, low contrast, and contrast inversion (a
crude stand-in for a T2-like sequence the model was not made for). The shipped post-processing
runs on each, and ``brainseg_monai.metrics`` measures it against the boxes and the true
outlines. Prints one JSON row per condition: outline Dice, containment F1, the share of slices
where a tumor is found, the mean tumor score, the share flagged as unlike the training slices
(``input_unusual``) and, with the sequence check, the share it alone calls another sequence.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from brainseg_monai.metrics import evaluate_predictions
from scripts.coco import coco_to_datalist
from scripts.predictor import BundlePredictor


def _bias_field(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return grey * np.exp(0.35 * xx - 0.25 * yy + 0.2 * xx * yy)


def _low_resolution(grey: np.ndarray) -> np.ndarray:
    small = ndimage.zoom(grey, 1 / 3, order=1)
    return ndimage.zoom(small, np.array(grey.shape) / np.array(small.shape), order=1)[: grey.shape[0], : grey.shape[1]]


def _inverted(grey: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    head = ndimage.binary_fill_holes(ndimage.binary_opening(grey > threshold_otsu(grey), iterations=2))
    return np.where(head, grey.max() - grey, 0.0)


CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "original": lambda g, r: g,
    "gamma 0.5 (brighter)": lambda g, r: 255.0 * (g / 255.0) ** 0.5,
    "gamma 2.0 (darker)": lambda g, r: 255.0 * (g / 255.0) ** 2.0,
    "low contrast (x0.4 + 60)": lambda g, r: 0.4 * g + 60.0,
    "bias field": lambda g, r: _bias_field(g),
    "noise (sigma 12)": lambda g, r: g + r.normal(0.0, 12.0, g.shape),
    "blur (sigma 2 px)": lambda g, r: ndimage.gaussian_filter(g, 2.0),
    "3x lower resolution": lambda g, r: _low_resolution(g),
    "inverted contrast (T2-like)": lambda g, r: _inverted(g),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("--outlines")
    ap.add_argument("--model")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    predictor = BundlePredictor(ckpt_path=args.model, device="cpu", config_files=args.config)
    threshold = predictor.other_sequence_threshold
    records = coco_to_datalist(args.split_dir)[: args.n]
    greys = []
    for record in records:
        with Image.open(record["image"]) as im:
            greys.append(np.asarray(im.convert("F"), dtype=np.float64))
    for name, change in CONDITIONS.items():
        rng = np.random.default_rng(args.seed)
        images = [np.clip(change(g, rng), 0, 255).astype(np.float32) for g in greys]
        predictions = predictor.predict_arrays(images, details=True)
        summary = evaluate_predictions(records, predictions, args.outlines).summary
        row = {
            "condition": name,
            "n": len(records),
            "outline_dice_mean": summary["outline_dice_mean"],
            "containment_f1": summary["containment_f1"],
            "tumor_found_rate": summary["n_images_tumor_found"] / len(records),
            "tumor_score_mean": float(np.mean([p.tumor_score for p in predictions])),
            "input_unusual_rate": float(np.mean([p.input_unusual for p in predictions])),
        }
        if threshold is not None:  # the share the sequence check alone calls another sequence
            row["other_sequence_rate"] = float(np.mean([p.input_other_sequence > threshold for p in predictions]))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
