"""Build the bundle's input reference: the intensity features of the training slices as the network sees them.

    python benchmarks/make_input_reference.py DATASET/train [--bundle bundle] [--percentile 99]
        [--volumes ../shared/data/lgg_volumes/t1c --cases runs/lgg/cases.json [--cases-key train]]

Runs the bundle's own ``image_transforms`` (grey, resize, percentile scaling) on every slice of
the split and writes ``<bundle>/models/input_reference.json``
(:func:`scripts.input_check.build_input_reference`), which the bundle's inference reads
to flag inputs unlike the training data. With ``--volumes``, the T1 contrast volumes
``<case>.nii.gz`` of the cases listed under ``--cases-key`` in ``--cases`` join it, read and cut
into slices as inference reads a volume (:func:`scripts.io.read_medical_image`, one slice per k,
the config's ``slice_transforms``): their brain-bearing slices join the statistics, and the
reference gets ``max_volume_distance`` for :func:`scripts.input_check.unusual_volume`. Only the
listed cases are read: cases held apart for measuring must never build it. Prints the
reference's ``max_distance`` (and ``max_volume_distance``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator

import numpy as np
from monai.bundle import ConfigParser
from monai.transforms import Compose

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.coco import coco_to_datalist
from scripts.input_check import build_input_reference
from scripts.io import read_medical_image
from scripts.predictor import _as_channel_first  # the predictor's own array-to-slice step: the same pixels


def training_volumes(folder: str, cases_file: str, key: str = "train") -> list[str]:
    """The paths ``<folder>/<case>.nii.gz`` of the cases listed under ``key`` in ``cases_file``.

    Raises:
        ValueError: ``key`` is not a list of cases in ``cases_file``.
        FileNotFoundError: a listed case has no volume in ``folder``.
    """
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f).get(key)
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{cases_file}: no list of cases under {key!r}")
    paths = [os.path.join(folder, f"{case}.nii.gz") for case in cases]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: volume of a listed case not found ({len(missing)} missing)")
    return paths


def volume_slices(path: str, slice_transforms: Compose) -> list[np.ndarray]:
    """The slices of a volume as inference preprocesses them: one per k of ``read_medical_image``'s array."""
    array, _ = read_medical_image(path)
    volume = array[None] if array.ndim == 2 else array
    return [slice_transforms({"image": _as_channel_first(s)})["image"] for s in volume]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--percentile", type=float, default=99.0)
    ap.add_argument("--volumes", help="folder of T1 contrast training volumes <case>.nii.gz")
    ap.add_argument("--cases", help="JSON file listing the training cases (required with --volumes)")
    ap.add_argument("--cases-key", default="train", help="the key of the training cases' list in --cases")
    args = ap.parse_args()
    if bool(args.volumes) != bool(args.cases):
        ap.error("--volumes and --cases go together: only the listed training cases may build the reference")
    parser = ConfigParser()
    parser.read_config(os.path.join(args.bundle, "configs", "inference.json"))
    parser["bundle_root"] = args.bundle
    load = Compose([parser.get_parsed_content("load_image"), *parser.get_parsed_content("image_transforms")])
    images = (load({"image": r["image"]})["image"] for r in coco_to_datalist(args.split_dir))
    volumes: Iterator[list[np.ndarray]] | None = None
    paths: list[str] = []
    if args.volumes:
        paths = training_volumes(args.volumes, args.cases, args.cases_key)
        slice_transforms = Compose(parser.get_parsed_content("slice_transforms"))
        volumes = (volume_slices(p, slice_transforms) for p in paths)
    target = parser.get_parsed_content("input_reference")
    reference = build_input_reference(images, args.percentile, target, volumes=volumes)
    summary = {"path": target, "n_images": reference["n_images"], "max_distance": reference["max_distance"]}
    if paths:
        summary |= {"n_volumes": reference["n_volumes"], "max_volume_distance": reference["max_volume_distance"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
