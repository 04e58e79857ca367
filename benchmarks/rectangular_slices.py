"""Slices that are not square: padded to a square (the bundle's ``PadToSquared``) against stretched by the resize.

    python benchmarks/rectangular_slices.py [--dataset DATASET] [--lgg-dir LGG_DIR] [--cases runs/lgg/cases.json]
        [--margin 0.04] [--bundle bundle] [--json results.json]

A narrow field of view, or the axial slice of a volume stored sagittally (256 x 176 for a common 3D
T1), is not square. The network takes 256 x 256; stretched to that, the head is stretched too. Every
slice is cut to the columns its head spans (``--margin`` of the width left on each side), which keeps
the whole head and makes the slice narrower, and segmented three ways:

- ``padded``: the bundle as it ships (``PadToSquared`` pads the shorter side with the slice's air);
- ``stretched``: the same bundle without that step (the resize stretches the slice to a square);
- ``uncut``: the whole square slice, its mask then cut the same way (what the cut lost).

Printed: on the valid split (``DATASET/valid``, the images whose head spans less than 90% of the width)
the tumor slices found, those with nothing shown and outline Dice (``DATASET/valid_outlines``, cut the
same way); on the T1 contrast volumes of ``--lgg-dir`` (the ``tune`` cases of ``--cases``, or all),
each volume cut to the columns its head spans on any slice, the tumor-free slices (at least 3 slices
from the FLAIR mask) with a confident tumor and the volumes with a tumor found on a masked slice.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
from typing import Any

import numpy as np
from benchmark_results import emit, share


def head_columns(slices: np.ndarray, margin: float) -> tuple[int, int]:
    """The columns a head spans on a (H, W) slice or on any slice of a (K, H, W) volume, and ``margin``
    of the width beyond each side. A column is the head's where more than 1% of its pixels are brighter
    than a tenth of the 99th percentile."""
    grey = np.asarray(slices, np.float32)
    bright = grey > 0.1 * np.percentile(grey, 99)
    columns = np.nonzero(bright.reshape(-1, grey.shape[-1]).mean(axis=0) > 0.01)[0]
    width = grey.shape[-1]
    if columns.size == 0:
        return 0, width
    pad = int(margin * width)
    return max(0, int(columns[0]) - pad), min(width, int(columns[-1]) + 1 + pad)


def predictors(bundle: str) -> dict[str, Any]:
    """The shipped predictor and the same one whose slices are stretched instead of padded."""
    from monai.bundle import ConfigParser

    from scripts.predictor import BundlePredictor

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    steps = copy.deepcopy(parser.config["image_transforms"])
    stretched = [t for t in steps if not str(t.get("_target_", "")).endswith("PadToSquared")]
    if len(stretched) == len(steps):
        raise SystemExit(f"{bundle}: its image_transforms have no PadToSquared step to compare with")
    shipped = BundlePredictor(bundle, device="cpu")
    return {
        "padded": shipped,
        "stretched": BundlePredictor(bundle, device="cpu", overrides={"image_transforms": stretched}),
        "uncut": shipped,
    }


def measure_valid(split: str, outlines: str, models: dict[str, Any], margin: float) -> list[dict[str, Any]]:
    from PIL import Image

    from scripts.metrics.pixel import load_outline, outline_dice

    counts = {name: {"images": 0, "found": 0, "nothing_shown": 0, "dice": []} for name in models}
    for path in sorted(glob.glob(os.path.join(split, "*.jpg"))):
        outline_path = os.path.join(outlines, os.path.splitext(os.path.basename(path))[0] + ".png")
        if not os.path.isfile(outline_path):
            continue
        grey = np.asarray(Image.open(path).convert("L"), np.float32)
        left, right = head_columns(grey, margin)
        if right - left > 0.9 * grey.shape[1]:
            continue  # the head fills the width: nothing to cut
        truth = load_outline(outline_path)[:, left:right]
        for name, model in models.items():
            found = model.predict_arrays([grey if name == "uncut" else grey[:, left:right]], details=True)[0]
            mask = np.asarray(found.mask)[:, left:right] if name == "uncut" else np.asarray(found.mask)
            possible = found.possible_mask is not None and np.asarray(found.possible_mask).any()
            c = counts[name]
            c["images"] += 1
            c["found"] += int(found.tumor_found)
            c["nothing_shown"] += int(not found.tumor_found and not possible)
            c["dice"].append(outline_dice(mask, truth))
    return [
        {
            "valid, cut to the head's columns": name,
            "images": c["images"],
            "tumor_found": f"{c['found']} ({c['found'] / max(1, c['images']):.1%})",
            "nothing_shown": c["nothing_shown"],
            "outline_dice_mean": round(float(np.mean(c["dice"])), 4) if c["dice"] else None,
        }
        for name, c in counts.items()
    ]


def measure_volumes(lgg_dir: str, cases: list[str], models: dict[str, Any], margin: float) -> list[dict[str, Any]]:
    from scripts.io import read_medical_image
    from scripts.tumor_free import tumor_free_slice_indices
    from scripts.volumes import predict_volume

    counts = {name: {"volumes": 0, "free": 0, "free_false": 0, "found": 0} for name in models}
    for case in cases:
        volume, _ = read_medical_image(os.path.join(lgg_dir, "t1c", f"{case}.nii.gz"))
        truth = read_medical_image(os.path.join(lgg_dir, "masks", f"{case}.nii.gz"))[0] > 0
        left, right = head_columns(volume, margin)
        free = tumor_free_slice_indices(truth, 3)
        tumor_slices = np.nonzero(truth.reshape(len(truth), -1).any(axis=1))[0]
        for name, model in models.items():
            labels, _ = predict_volume(volume if name == "uncut" else volume[:, :, left:right], model, slice_reports=[])
            found = (labels == 1).reshape(len(labels), -1).any(axis=1)
            c = counts[name]
            c["volumes"] += 1
            c["free"] += len(free)
            c["free_false"] += int(found[free].sum())
            c["found"] += int(found[tumor_slices].any())

    return [
        {
            "volumes, cut to the head's columns": name,
            "volumes": c["volumes"],
            "tumor_free_slices_with_tumor": share(c["free_false"], c["free"]),
            "volumes_with_tumor_found_on_a_masked_slice": c["found"],
        }
        for name, c in counts.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="../shared/data/brain_tumor_coco", help="holds valid/ and valid_outlines/")
    ap.add_argument("--lgg-dir", default="../shared/data/lgg_volumes", help="holds t1c/ and masks/")
    ap.add_argument("--cases", help="JSON of case lists (train, tune): the tune cases are measured")
    ap.add_argument("--margin", type=float, default=0.04, help="the width left beyond the head on each side")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    bundle = os.path.abspath(args.bundle)
    os.environ["BRAINSEG_BUNDLE"] = bundle  # `scripts` is the measured bundle's code, not the checkout's
    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

    models = predictors(bundle)
    results: dict[str, Any] = {"bundle": bundle, "margin": args.margin}
    valid = os.path.join(args.dataset, "valid")
    if os.path.isdir(valid):
        results["valid"] = measure_valid(valid, os.path.join(args.dataset, "valid_outlines"), models, args.margin)
    if os.path.isdir(os.path.join(args.lgg_dir, "t1c")):
        paths = sorted(glob.glob(os.path.join(args.lgg_dir, "t1c", "*.nii.gz")))
        cases = [os.path.basename(p).split(".")[0] for p in paths]
        if args.cases:
            with open(args.cases, encoding="utf-8") as f:
                tune = set(json.load(f)["tune"])
            cases = [c for c in cases if c in tune]
        results["volumes"] = measure_volumes(args.lgg_dir, cases, models, args.margin)
    emit(results, args.json)


if __name__ == "__main__":
    main()
