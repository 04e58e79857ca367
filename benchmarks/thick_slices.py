"""Volumes acquired in thick coronal or sagittal slices: their axial slices with square pixels against stretched.

    python benchmarks/thick_slices.py [../shared/data/lgg_volumes] [--cases runs/lgg/cases.json] [--split tune]
        [--thickness 3 --thickness 6] [--bundle bundle] [--json results.json]

A post-contrast T1 is often acquired as thick coronal or sagittal slices (0.5 mm in the plane, 3-6 mm
apart). Its axial slices, which the bundle cuts and segments, then have pixels as long as the slices
are apart. Each T1 contrast volume of ``<lgg_dir>/t1c`` (the ``--split`` cases of ``--cases``, or all)
is made into such an acquisition: ``--thickness`` adjacent rows (front to back) averaged into one
coronal slice, or as many adjacent columns (right to left) into one sagittal slice, stored coronally
or sagittally (``reoriented_volumes.py``'s storages) with that slice spacing. Each copy goes through
``segment_medical_file`` (the slice loop of ``python -m monai.bundle run``, ``brainseg segment`` and the
3D Slicer module) twice: with its true spacing (``square pixels``: the bundle interpolates the thick
axis) and with the spacing written as 1 mm everywhere (``as they lie``: each axial slice squeezed
``--thickness`` times, what a bundle that ignores the spacing does). The axial slices are the
original's, so each is scored as the original is: printed per copy, the tumor-free slices (at least
3 slices from every slice of the FLAIR mask) with a confident tumor, the tumor slices with a tumor
found and the volumes with a tumor found on a tumor slice; the original, axial at full resolution,
first.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import numpy as np
from benchmark_results import emit, share
from reoriented_volumes import STORAGES, back, lgg_arguments, reoriented, slice_truth, t1c_volumes

#: The acquisitions made: the numpy axis of the original (k, j, i) array averaged in blocks (the thick
#: slices' axis), and the storage that puts the slices along K.
ACQUISITIONS = {"coronal": 1, "sagittal": 2}


def thick(array: np.ndarray, np_axis: int, n: int) -> np.ndarray:
    """``array`` with every ``n`` adjacent planes along ``np_axis`` averaged into one (a last partial block
    is averaged over what it holds)."""
    size = array.shape[np_axis]
    starts = np.arange(0, size, n)
    return np.add.reduceat(array.astype(np.float32), starts, axis=np_axis) / np.diff(np.append(starts, size)).reshape(
        [-1 if a == np_axis else 1 for a in range(array.ndim)]
    )


def acquisition(image: Any, np_axis: int, n: int, storage: str, true_spacing: bool) -> Any:
    """The ITK image of ``image`` acquired in slices ``n`` voxels thick across ``np_axis``, stored as
    ``storage`` stores it; with the thick axis's spacing ``n`` times the original's, or 1 mm everywhere."""
    import itk

    copy = itk.image_from_array(np.ascontiguousarray(thick(itk.array_from_image(image), np_axis, n)))
    copy.CopyInformation(image)
    spacing = [float(v) for v in image.GetSpacing()]
    if true_spacing:
        spacing[2 - np_axis] *= n  # ITK's spacing is (I, J, K); numpy axis a is IJK axis 2 - a
    else:
        spacing = [1.0, 1.0, 1.0]
    copy.SetSpacing(spacing)
    return reoriented(copy, STORAGES[storage])


def main() -> None:
    ap = lgg_arguments(__doc__)
    ap.add_argument(
        "--thickness", type=int, action="append", help="voxels per thick slice (repeatable; default: 3 and 6)"
    )
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    thicknesses = args.thickness or [3, 6]
    if any(n < 2 for n in thicknesses):
        sys.exit(f"--thickness: expected whole numbers of at least 2, got {thicknesses}")
    bundle = os.path.abspath(args.bundle)
    os.environ["BRAINSEG_BUNDLE"] = bundle  # `scripts` is the measured bundle's code, not the checkout's
    import itk

    import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
    from scripts.predictor import BundlePredictor
    from scripts.volumes import segment_medical_file

    paths = t1c_volumes(args.lgg_dir, args.cases, args.split)
    copies = [("original, axial", None, 1, True)] + [
        (f"{name}, {n} voxels thick, {'square pixels' if true else 'as they lie'}", name, n, true)
        for name in ACQUISITIONS
        for n in thicknesses
        for true in (True, False)
    ]
    predictor = BundlePredictor(bundle, device="cpu")
    counts = {
        label: {"free": 0, "free_false": 0, "tumor": 0, "tumor_found": 0, "volumes_found": 0} for label, *_ in copies
    }
    volumes_with_tumor = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            case = os.path.basename(path).split(".")[0]
            image = itk.imread(path, itk.F)
            tumor_slices, free = slice_truth(args.lgg_dir, path)
            volumes_with_tumor += int(tumor_slices.any())
            line = {}
            for label, name, n, true in copies:
                if name is None:
                    source_image, permutation = image, STORAGES["axial"]
                else:
                    source_image = acquisition(image, ACQUISITIONS[name], n, name, true)
                    permutation = STORAGES[name]
                source = os.path.join(tmp, f"{case}.nii.gz")
                itk.imwrite(source_image, source)
                result = segment_medical_file(predictor, source, os.path.join(tmp, f"{case}_mask.nii.gz"))
                labels = back(np.asarray(result.mask), permutation)  # (k, j / n, i) or (k, j, i / n)
                found = (labels == 1).reshape(len(free), -1).any(axis=1)
                c = counts[label]
                c["free"] += int(free.sum())
                c["free_false"] += int((found & free).sum())
                c["tumor"] += int(tumor_slices.sum())
                c["tumor_found"] += int((found & tumor_slices).sum())
                c["volumes_found"] += int((found & tumor_slices).any())
                line[label] = f"{int((found & free).sum())} false, {int((found & tumor_slices).sum())} found"
            print(case, json.dumps(line), flush=True)

    rows = [
        {
            "volume": label,
            "volumes": len(paths),
            "tumor_free_slices_with_tumor": share(c["free_false"], c["free"]),
            "tumor_slices_found": share(c["tumor_found"], c["tumor"]),
            "volumes_with_tumor_found": share(c["volumes_found"], volumes_with_tumor),
        }
        for label, c in counts.items()
    ]
    results = {"bundle": bundle, "split": args.split if args.cases else "all", "rows": rows}
    emit(results, args.json)


if __name__ == "__main__":
    main()
