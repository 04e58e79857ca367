"""Measure the input check on whole volumes: another sequence (FLAIR) should be flagged, T1 contrast not.

    python benchmarks/input_check_volumes.py [../shared/data/lgg_volumes] [--cases runs/lgg/cases.json]
        [--coco-valid ../shared/data/brain_tumor_coco/valid] [--bundle bundle] [--json results.json]

Each volume of ``<lgg_dir>/flair`` and ``<lgg_dir>/t1c`` is read as inference reads it
(:func:`scripts.io.read_medical_image`, one slice per k of its array), each slice goes through the
bundle's ``slice_transforms`` and ``input_checks`` (:class:`scripts.input_check.InputLikenessd`, the
bundle's ``models/input_reference.json``, and :class:`scripts.sequence_check.OtherSequenced`, its
``models/sequence_check.pt``) without the segmentation network, and the volume is judged by
:func:`scripts.input_check.unusual_volume` from its slices' distances and probabilities of another
sequence. Printed per sequence: the
share of volumes flagged and of slices flagged; both also per list of ``--cases`` (the training
cases may have built the reference and trained the sequence check, the held-apart ``tune`` ones never). Then the 2D
validation images, one flag each as ``brainseg segment`` gives it (should stay low), and the same
images inverted (what the check was first made for: should be flagged), and pictures that are not
MRI at all (scikit-image's sample images, noise, a gradient, blanks: should be flagged).

Goals: FLAIR volumes flagged >= 95 %, T1 contrast volumes flagged <= 5 %.
A bundle whose input_check has no ``unusual_volume`` (older code) is judged by the rule it would
have had: the median slice distance above ``max_distance``.
"""

from __future__ import annotations

import argparse
import glob
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

GOALS = {"flair": ">= 0.95 of volumes flagged", "t1c": "<= 0.05 of volumes flagged"}


def _checks(bundle: str) -> tuple[Any, Any, Any, Mapping[str, Any], Callable[[Sequence[float], Mapping], bool], str]:
    """The bundle's file loader, slice transforms, input checks, reference and volume rule."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from scripts import input_check

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser["bundle_root"] = bundle
    slice_transforms = Compose(parser.get_parsed_content("slice_transforms"))
    load = Compose([parser.get_parsed_content("load_image"), slice_transforms])
    checks = Compose(parser.get_parsed_content("input_checks"))
    reference = input_check.load_input_reference(parser.get_parsed_content("input_reference"))
    rule = getattr(input_check, "unusual_volume", None)
    if rule is not None:
        return load, slice_transforms, checks, reference, rule, "unusual_volume"

    def median_rule(distances: Sequence[float], ref: Mapping) -> bool:
        return bool(np.median(distances) > ref["max_distance"])

    return load, slice_transforms, checks, reference, median_rule, "median distance > max_distance (fallback)"


Measures = tuple[list[float], list[bool], list[Any]]


def _flags(items: Sequence[dict], checks: Any) -> Measures:
    """Each item's distance, flag and probability of another sequence (None for a bundle without the check)."""
    out = [checks(item) for item in items]
    return (
        [float(d["image_distance"]) for d in out],
        [bool(d["image_unusual"]) for d in out],
        [d.get("image_other_sequence") for d in out],
    )


def measure_volume(path: str, slice_transforms: Any, checks: Any) -> Measures:
    """Each slice's distance, flag and probability of another sequence, as inference preprocesses a volume."""
    from scripts.io import read_medical_image
    from scripts.predictor import _as_channel_first  # the predictor's own array-to-slice step: the same pixels

    array, _ = read_medical_image(path)
    volume = array[None] if array.ndim == 2 else array
    return _flags([slice_transforms({"image": _as_channel_first(s)}) for s in volume], checks)


def _row(name: str, volumes: Mapping[str, Measures], reference: Mapping, rule: Callable) -> dict:
    # as inference judges a volume (older code: without the flags, or without the sequence check)
    parameters = inspect.signature(rule).parameters
    flagged = [
        case
        for case, (dist, flags, other) in volumes.items()
        if (
            rule(dist, reference, flags, other)
            if "other_sequence" in parameters
            else rule(dist, reference, flags) if "flags" in parameters else rule(dist, reference)
        )
    ]
    slices = [f for _, flags, _ in volumes.values() for f in flags]
    return {
        "set": name,
        "volumes": len(volumes),
        "volumes_flagged": len(flagged),
        "volume_fraction": round(len(flagged) / max(1, len(volumes)), 3),
        "slices": len(slices),
        "slices_flagged": int(sum(slices)),
        "slice_fraction": round(sum(slices) / max(1, len(slices)), 3),
        "flagged_cases": sorted(flagged),
        "median_distances": {c: round(float(np.median(d)), 3) for c, (d, _, _) in sorted(volumes.items())},
        "median_other_sequence": {
            c: round(float(np.median(o)), 3) for c, (_, _, o) in sorted(volumes.items()) if None not in o
        },
    }


def measure_images(folder: str, load: Any, slice_transforms: Any, checks: Any) -> list[dict]:
    """Rows for the 2D images of a COCO split as they are and inverted (head bright-for-dark)."""
    from PIL import Image

    from scripts.coco import coco_to_datalist
    from scripts.predictor import _as_channel_first

    files = [r["image"] for r in coco_to_datalist(folder)]
    _, flags, _ = _flags([load({"image": f}) for f in files], checks)
    greys = (np.asarray(Image.open(f).convert("F"), np.float32) for f in files)
    # as tests/test_input_check.py inverts: the head's intensities reversed, the air left dark
    inverted = [slice_transforms({"image": _as_channel_first(np.where(g > 20, 255.0 - g, 0.0))}) for g in greys]
    _, inverted_flags, _ = _flags(inverted, checks)
    return [
        {"set": name, "images": len(f), "images_flagged": int(sum(f)), "image_fraction": round(sum(f) / len(f), 3)}
        for name, f in (("coco valid", flags), ("coco valid inverted", inverted_flags))
    ]


#: scikit-image's sample pictures that ship with it (the others need a download)
SKIMAGE_PICTURES = (
    "astronaut", "binary_blobs", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee",
    "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip


def not_mri_pictures() -> dict[str, np.ndarray]:
    """Pictures that are not MRI slices: scikit-image's sample images that ship with it, noise, a gradient,
    a checkerboard, a blob, blanks."""
    import skimage.data

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    pictures = {
        "uniform noise": rng.random((256, 256)) * 255,
        "gaussian noise": np.clip(rng.normal(128, 40, (300, 300)), 0, 255),
        "blob": np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 3000) * 255,
        "checkerboard": ((yy // 16 + xx // 16) % 2) * 255.0,
        "gradient": np.tile(np.linspace(0, 255, 256), (256, 1)),
        "white": np.full((256, 256), 255.0),
        "black": np.zeros((256, 256)),
    }
    for name in SKIMAGE_PICTURES:
        try:
            picture = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        except (ImportError, OSError, ValueError):  # a sample this scikit-image cannot load here
            continue
        if picture.ndim == 2 or (picture.ndim == 3 and picture.shape[-1] in (3, 4)):
            pictures[name] = picture * 255 if picture.max() <= 1 else picture
    return pictures


def measure_pictures(slice_transforms: Any, checks: Any) -> dict:
    """The row for :func:`not_mri_pictures`: how many are flagged, and which are not."""
    from scripts.predictor import _as_channel_first

    pictures = not_mri_pictures()
    names = list(pictures)
    _, flags, _ = _flags([slice_transforms({"image": _as_channel_first(pictures[n])}) for n in names], checks)
    missed = [n for n, f in zip(names, flags) if not f]
    return {"set": "not MRI (pictures)", "images": len(names), "images_flagged": int(sum(flags)),
            "image_fraction": round(sum(flags) / len(names), 3), "not_flagged": missed}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir", nargs="?", default="../shared/data/lgg_volumes", help="holds flair/ and t1c/")
    ap.add_argument("--cases", help="JSON of case lists (train, tune): T1 contrast figures per list")
    ap.add_argument("--coco-valid", default="../shared/data/brain_tumor_coco/valid")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    bundle = os.path.abspath(args.bundle)
    os.environ["BRAINSEG_BUNDLE"] = bundle  # `scripts` is the measured bundle's code, not the checkout's
    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

    load, slice_transforms, checks, reference, rule, rule_name = _checks(bundle)
    results: dict[str, Any] = {"bundle": bundle, "volume_rule": rule_name, "goals": GOALS, "rows": []}
    results["reference"] = {k: reference.get(k) for k in ("max_distance", "max_volume_distance", "n_images")}
    by_sequence: dict[str, dict[str, tuple[list[float], list[bool]]]] = {}
    for sequence in ("flair", "t1c"):
        paths = sorted(glob.glob(os.path.join(args.lgg_dir, sequence, "*.nii.gz")))
        if not paths:
            sys.exit(f"{os.path.join(args.lgg_dir, sequence)}: no volumes")
        by_sequence[sequence] = {
            os.path.basename(p)[: -len(".nii.gz")]: measure_volume(p, slice_transforms, checks) for p in paths
        }
        results["rows"].append(_row(sequence, by_sequence[sequence], reference, rule))
    if args.cases:
        with open(args.cases, encoding="utf-8") as f:
            lists = json.load(f)
        for sequence in ("flair", "t1c"):
            for key, cases in lists.items():
                subset = {c: v for c, v in by_sequence[sequence].items() if c in set(cases)}
                if subset:
                    results["rows"].append(_row(f"{sequence} {key}", subset, reference, rule))
    if os.path.isdir(args.coco_valid):
        results["rows"].extend(measure_images(args.coco_valid, load, slice_transforms, checks))
    results["rows"].append(measure_pictures(slice_transforms, checks))
    print(f"bundle {bundle}; volume rule: {rule_name}; reference: {json.dumps(results['reference'])}")
    print(f"{'set':<22} {'volumes flagged':>18} {'slices/images flagged':>24}")
    for r in results["rows"]:
        if "volumes" in r:
            vol = f"{r['volumes_flagged']}/{r['volumes']} ({r['volume_fraction']:.1%})"
            print(f"{r['set']:<22} {vol:>18} {r['slices_flagged']:>9}/{r['slices']} ({r['slice_fraction']:.1%})")
        else:
            print(f"{r['set']:<22} {'':>18} {r['images_flagged']:>9}/{r['images']} ({r['image_fraction']:.1%})")
    missed = results["rows"][-1]["not_flagged"]
    print(f"pictures not flagged: {', '.join(missed) if missed else 'none'}")
    print(f"goals: FLAIR {GOALS['flair']}; T1 contrast {GOALS['t1c']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
