"""Volumes stored sagittally or coronally, or with their slices transposed: are they segmented as their axial
originals are?

    python benchmarks/reoriented_volumes.py [../shared/data/lgg_volumes] [--cases runs/lgg/cases.json]
        [--split tune] [--storage NAME ...] [--bundle bundle] [--json results.json]

Many hospitals acquire the post-contrast T1 as a 3D sagittal volume; others store coronal ones, or
axial slices whose rows run right to left. Each T1 contrast volume of ``<lgg_dir>/t1c`` (the ``--split``
cases of ``--cases``, or all) is written again with its voxels stored along other axes and a direction
matrix that keeps every voxel where it was in the patient: axially with each slice transposed (rows right
to left), sagittally (I front to back, J foot to head, K right to left) and coronally (I right to left,
J foot to head, K front to back). Each copy goes through ``segment_medical_file`` (the slice loop of
``python -m monai.bundle run``, ``brainseg segment`` and the 3D Slicer module) and its mask is turned
back onto the original's grid. Printed per storage: how many volumes get the same label map as the
axial original, and on the original's axial slices the tumor-free slices (at least 3 slices from every
slice of the FLAIR mask) with a confident tumor, and the tumor slices with a tumor found.

A bundle that cuts every volume along K and hands the network each slice as it lies gives it sagittal or
coronal slices of such a copy, or axial slices whose rows run right to left.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from typing import Any

import numpy as np
from benchmark_results import emit, share

#: Each storage: the permutation of the original (k, j, i) array axes that gives the copy's (k, j, i),
#: with the original stored axially (K foot to head).
STORAGES = {
    "axial": (0, 1, 2),
    "axial, rows right to left": (0, 2, 1),  # the same slices transposed: J <- the original I, I <- J
    "sagittal": (2, 0, 1),  # K <- the original I, J <- K, I <- J
    "coronal": (1, 0, 2),  # K <- the original J, J <- K, I <- I
}


def reoriented(image: Any, permutation: tuple[int, int, int]) -> Any:
    """An ITK image holding ``image``'s voxels along permuted axes, each voxel where it was in the patient."""
    import itk

    array = itk.array_from_image(image)
    copy = itk.image_from_array(np.ascontiguousarray(np.transpose(array, permutation)))
    direction = itk.array_from_matrix(image.GetDirection())
    spacing = np.asarray(image.GetSpacing())
    # the copy's numpy axis n is the original's numpy axis permutation[n]; IJK axis a is numpy axis 2 - a
    ijk = [2 - permutation[2 - a] for a in range(3)]
    copy.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction[:, ijk])))
    copy.SetSpacing([float(spacing[a]) for a in ijk])
    copy.SetOrigin(image.GetOrigin())  # the first voxel is the same voxel
    return copy


def back(mask: np.ndarray, permutation: tuple[int, int, int]) -> np.ndarray:
    """A copy's mask on the original's (k, j, i) grid."""
    return np.transpose(mask, np.argsort(permutation))


def t1c_volumes(lgg_dir: str, cases: str | None, split: str) -> list[str]:
    """The T1 contrast volumes of ``<lgg_dir>/t1c`` to measure: the ``split`` list of the ``cases`` JSON, or all.
    Exits naming the folder when there are none."""
    paths = sorted(glob.glob(os.path.join(lgg_dir, "t1c", "*.nii.gz")))
    if cases:
        with open(cases, encoding="utf-8") as f:
            wanted = set(json.load(f)[split])
        paths = [p for p in paths if os.path.basename(p).split(".")[0] in wanted]
    if not paths:
        sys.exit(f"{lgg_dir}/t1c: no volumes to measure")
    return paths


def slice_truth(lgg_dir: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Per axial slice of the volume at ``path``: whether its FLAIR mask holds tumor, and whether it is a
    tumor-free slice (at least 3 slices from every masked slice, as ``benchmarks/lgg_volumes.py`` counts them)."""
    import itk

    from scripts.tumor_free import tumor_free_slice_indices

    truth = itk.array_from_image(itk.imread(os.path.join(lgg_dir, "masks", os.path.basename(path)))) > 0
    free = np.zeros(len(truth), dtype=bool)
    free[tumor_free_slice_indices(truth, 3)] = True
    return truth.reshape(len(truth), -1).any(axis=1), free


def lgg_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the volumes to measure: ``lgg_dir``, ``--cases``, ``--split`` (:func:`t1c_volumes`)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir", nargs="?", default="../shared/data/lgg_volumes", help="holds t1c/ and masks/")
    ap.add_argument("--cases", help="JSON of case lists (train, tune)")
    ap.add_argument("--split", default="tune", help="the list of --cases to measure (default: tune)")
    return ap


def main() -> None:
    ap = lgg_arguments(__doc__)
    ap.add_argument(
        "--storage",
        action="append",
        choices=list(STORAGES),
        help="measure these storages only (repeatable; axial is always measured)",
    )
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    bundle = os.path.abspath(args.bundle)
    os.environ["BRAINSEG_BUNDLE"] = bundle  # `scripts` is the measured bundle's code, not the checkout's
    import itk

    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
    from scripts.predictor import BundlePredictor
    from scripts.volumes import segment_medical_file

    paths = t1c_volumes(args.lgg_dir, args.cases, args.split)
    storages = {name: p for name, p in STORAGES.items() if name == "axial" or not args.storage or name in args.storage}
    predictor = BundlePredictor(bundle, device="cpu")
    counts = {name: {"same_as_axial": 0, "free": 0, "free_false": 0, "tumor": 0, "tumor_found": 0} for name in storages}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            case = os.path.basename(path).split(".")[0]
            image = itk.imread(path, itk.F)
            tumor_slices, free = slice_truth(args.lgg_dir, path)
            labels = {}
            for name, permutation in storages.items():
                source = os.path.join(tmp, f"{case}_{name}.nii.gz")
                itk.imwrite(reoriented(image, permutation), source)
                result = segment_medical_file(predictor, source, os.path.join(tmp, f"{case}_{name}_mask.nii.gz"))
                labels[name] = back(np.asarray(result.mask), permutation)
                found = (labels[name] == 1).reshape(len(free), -1).any(axis=1)
                c = counts[name]
                c["free"] += int(free.sum())
                c["free_false"] += int((found & free).sum())
                c["tumor"] += int(tumor_slices.sum())
                c["tumor_found"] += int((found & tumor_slices).sum())
                c["same_as_axial"] += int(np.array_equal(labels[name], labels["axial"]))
            print(case, {n: int(np.array_equal(labels[n], labels["axial"])) for n in storages}, flush=True)

    rows = [
        {
            "storage": name,
            "volumes": len(paths),
            "label_map_same_as_axial": c["same_as_axial"],
            "tumor_free_slices_with_tumor": share(c["free_false"], c["free"]),
            "tumor_slices_found": share(c["tumor_found"], c["tumor"]),
        }
        for name, c in counts.items()
    ]
    results = {"bundle": bundle, "split": args.split if args.cases else "all", "rows": rows}
    emit(results, args.json)


if __name__ == "__main__":
    main()
