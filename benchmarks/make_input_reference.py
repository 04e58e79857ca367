"""Build the bundle's input reference: the intensity histograms of the training slices as the network sees them.

    python benchmarks/make_input_reference.py DATASET/train [--bundle bundle] [--percentile 99]

Runs the bundle's own ``image_transforms`` (grey, resize, percentile scaling) on every slice of
the split and writes ``<bundle>/models/input_reference.json``
(:func:`scripts.input_check.build_input_reference`), which the bundle's inference reads
to flag inputs unlike the training data. Prints the reference's ``max_distance``.
"""

from __future__ import annotations

import argparse
import json
import os

from monai.bundle import ConfigParser
from monai.transforms import Compose

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.coco import coco_to_datalist
from scripts.input_check import build_input_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--percentile", type=float, default=99.0)
    args = ap.parse_args()
    parser = ConfigParser()
    parser.read_config(os.path.join(args.bundle, "configs", "inference.json"))
    parser["bundle_root"] = args.bundle
    load = Compose([parser.get_parsed_content("load_image"), *parser.get_parsed_content("image_transforms")])
    images = (load({"image": r["image"]})["image"] for r in coco_to_datalist(args.split_dir))
    target = parser.get_parsed_content("input_reference")
    reference = build_input_reference(images, args.percentile, target)
    print(json.dumps({"path": target, "n_images": reference["n_images"], "max_distance": reference["max_distance"]}))


if __name__ == "__main__":
    main()
