"""Choose the bundle's post-processing on a split: threshold, largest component, hole filling, operating point.

    python benchmarks/tune_postprocessing.py SPLIT_DIR [--model PATH] [--config OVERRIDE.json] [--outlines DIR]
        [--tumor-free TUMOR_FREE_SPLIT] [--thresholds 0.3,0.5] [--min-confidences 0,0.5,0.6]
        [--mirror-average]

The network runs once per image (tumor probability at the input's size through the bundle's
own ``probability_transforms``); each variant of the first stage (the first of the bundle's
``mask_transforms``, without the cascade's outline network, which redraws the tumors found) is then
applied to the cached probabilities and measured with ``brainseg_monai.metrics.evaluate_predictions``.
Prints one row per variant.
With ``--tumor-free`` (a split of synthetic tumor-free slices made from the same split by
``benchmarks/make_tumor_free_split.py``), each row also gives the fraction of those slices on
which a tumor is drawn (``tumor_free_fp_rate``): the operating point ``min_confidence`` trades
it against the tumors found (``containment_f1``, and ``tumor_images_found_at_tumor_rate``: a tumor at the
annotated tumor). The possible tumors' floor (``possible_min_confidence``) comes down with an operating
point below it. ``--mirror-average`` averages each slice's tumor probability with its mirror image's
(a test-time augmentation the bundle does not ship). Tune on the valid split only.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch
from monai.transforms import Compose

from brainseg_monai.metrics import evaluate_predictions
from scripts.coco import coco_to_datalist
from scripts.predictor import BundlePredictor, TumorPrediction

KEYS = (
    "dice_mean",
    "box_iou_mean",
    "detection_f1",
    "containment_f1",
    "fill_ratio_median",
    "outline_dice_mean",
    "n_images_no_tumor_found",
    "tumor_images_found_at_tumor_rate",
    "tumor_images_nothing_shown_at_tumor",
)


class MirrorAverage(torch.nn.Module):
    """A network whose tumor probability is the average of the slice's and its mirror image's (left-right).

    Returns the log of the averaged softmax, so the bundle's softmax gives that average back.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direct = torch.softmax(self.network(x), dim=1)
        mirrored = torch.softmax(self.network(torch.flip(x, dims=(-1,))), dim=1).flip(-1)
        return torch.log((direct + mirrored) / 2 + 1e-8)


def mask_transforms(
    predictor: BundlePredictor,
    threshold: float,
    largest: bool,
    fill: bool,
    min_confidence: float = 0.0,
    min_area_fraction: float = 0.0,
    possible_min_confidence: float | None = None,
) -> Compose:
    """The first of the bundle's own ``mask_transforms`` (probability to tumor mask), the variant's ids set.

    The config is the recipe. The cascade's outline network after it redraws each tumor found on the
    native-resolution slice; it does not decide whether or where a tumor is found, and is left out.
    ``possible_min_confidence`` (the possible tumors' floor) comes down with an operating point below it;
    None leaves no possible tumors.
    """
    parser = predictor.parser
    parser["threshold"], parser["keep_largest_component"], parser["fill_holes"] = threshold, largest, fill
    parser["min_confidence"], parser["min_area_fraction"] = min_confidence, min_area_fraction
    floor = min_confidence if possible_min_confidence is None else min(possible_min_confidence, min_confidence)
    parser["possible_min_confidence"] = floor
    parser.parse(reset=True)
    return Compose(parser.get_parsed_content("mask_transforms")[:1])


def postprocess(transforms: Compose, prob: np.ndarray) -> TumorPrediction:
    """The variant's prediction from a tumor probability: its mask, score and possible tumors."""
    out = transforms({"pred": np.stack([1.0 - prob, prob])})
    possible = out.get("pred_possible")
    return TumorPrediction(
        np.asarray(out["pred"][0]).astype(np.uint8),
        prob,
        float(out["pred_tumor_score"]),
        list(out["pred_components"]),
        possible_mask=None if possible is None else np.asarray(possible[0]).astype(np.uint8),
        possible_components=list(out.get("pred_possible_components") or []),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("--model")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--outlines")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7")
    ap.add_argument("--largest", default="false,true", help="keep_largest_component values to try")
    ap.add_argument("--fill", default="false,true", help="fill_holes values to try")
    ap.add_argument("--min-confidences", default="0", help="operating points (min_confidence) to try")
    ap.add_argument("--min-areas", default="0", help="min_area_fraction values to try")
    ap.add_argument("--tumor-free", help="a split of tumor-free slices: report the false-tumor rate on it")
    ap.add_argument(
        "--mirror-average", action="store_true", help="average each slice's probability with its mirror image's"
    )
    args = ap.parse_args()
    predictor = BundlePredictor(ckpt_path=args.model, device="cpu", config_files=args.config)
    if args.mirror_average:
        predictor.network = MirrorAverage(predictor.network)
    floor = predictor.parser.get_parsed_content("possible_min_confidence")
    records = coco_to_datalist(args.split_dir)
    probs = [predictor.predict_file(r["image"], with_probability=True)[1] for r in records]
    free_records = coco_to_datalist(args.tumor_free) if args.tumor_free else []
    free_probs = [predictor.predict_file(r["image"], with_probability=True)[1] for r in free_records]
    rows = []
    variants = itertools.product(
        map(float, args.thresholds.split(",")),
        [v.strip().lower() == "true" for v in args.largest.split(",")],
        [v.strip().lower() == "true" for v in args.fill.split(",")],
        map(float, args.min_confidences.split(",")),
        map(float, args.min_areas.split(",")),
    )
    for t, largest, fill, min_conf, min_area in variants:
        transforms = mask_transforms(predictor, t, largest, fill, min_conf, min_area, floor)
        summary = evaluate_predictions(records, (postprocess(transforms, p) for p in probs), args.outlines).summary
        row = {"threshold": t, "largest_component": largest, "fill_holes": fill, "min_confidence": min_conf}
        row["min_area_fraction"] = min_area
        row.update({k: summary.get(k) for k in KEYS})
        if free_records:
            free = evaluate_predictions(free_records, (postprocess(transforms, p) for p in free_probs)).summary
            row["tumor_free_fp_rate"] = free["tumor_free_fp_rate"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: (r["dice_mean"] or 0.0))
    print("best by dice_mean:", json.dumps(best))


if __name__ == "__main__":
    main()
