"""``benchmarks/make_lgg_splits.py``: volumes with slice-by-slice tumor masks become the recipe's two extra splits
(real tumor-free slices; T1c-visible tumor slices with boxes), split by patient, on small real NIfTI files."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import REPO
from PIL import Image

from brainseg_monai.recipe import _check_data
from scripts.coco import ANNOTATION_FILE, coco_to_datalist
from scripts.io import read_medical_image
from scripts.tumor_free import window_volume

sys.path.insert(0, str(REPO / "benchmarks"))
import make_lgg_splits  # noqa: E402


def _case(enhancing: bool) -> tuple[np.ndarray, np.ndarray]:
    """(k, j, i) uint8 volume of an elliptic head and its 0/1 mask on slices 10-14, left of the midline; the
    masked tissue is bright (an enhancing tumor) or like the other side (a tumor invisible on this sequence)."""
    k, j, i = np.mgrid[0:24, 0:64, 0:64]
    volume = np.where(((j - 32) / 28.0) ** 2 + ((i - 32) / 24.0) ** 2 <= 1, 100, 0).astype(np.uint8)
    mask = ((k >= 10) & (k <= 14) & ((j - 30) ** 2 + (i - 20) ** 2 <= 36)).astype(np.uint8)
    if enhancing:
        volume[mask > 0] = 220
    volume += np.random.default_rng(0).integers(0, 5, volume.shape, dtype=np.uint8)
    return volume, mask


def _write(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.transpose(array, (2, 1, 0)), np.eye(4)), str(path))  # (k, j, i) -> x, y, z


def test_lgg_splits_write_tumor_free_slices_and_boxed_visible_tumor_slices(tmp_path: Path):
    lgg = tmp_path / "lgg"
    for folder in ("t1c", "masks"):
        (lgg / folder).mkdir(parents=True)
    names = {"TCGA_AA_0001_2000": True, "TCGA_AA_0002_2000": False, "TCGA_AA_0003_2000": True}
    for name, enhancing in names.items():
        volume, mask = _case(enhancing)
        _write(lgg / "t1c" / f"{name}.nii.gz", volume)
        _write(lgg / "masks" / f"{name}.nii.gz", mask)
    with open(lgg / "cases.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "institution", "slices", "tumor_slices"])
        writer.writerows([name, "AA", 24, 5] for name in names)
    out = tmp_path / "splits"
    sys.argv = ["make_lgg_splits.py", str(lgg), str(out)]
    make_lgg_splits.main()

    cases = json.loads((out / "cases.json").read_text())
    assert cases == {"train": ["TCGA_AA_0001_2000", "TCGA_AA_0002_2000"], "tune": ["TCGA_AA_0003_2000"]}
    # tumor-free: the training cases' slices at least 3 from a masked slice (0-7 and 17-23), no annotation
    free = json.loads((out / "tumor_free" / ANNOTATION_FILE).read_text())
    assert len(free["images"]) == 2 * 15 and free["annotations"] == []
    # tumor boxes: only the enhancing training case's masked slices, each with its mask's bounding box
    boxes = json.loads((out / "tumor_boxes" / ANNOTATION_FILE).read_text())
    assert [im["file_name"] for im in boxes["images"]] == [f"TCGA_AA_0001_2000_{k:03d}.png" for k in range(10, 15)]
    volume, _ = read_medical_image(lgg / "t1c" / "TCGA_AA_0001_2000.nii.gz")
    mask, _ = read_medical_image(lgg / "masks" / "TCGA_AA_0001_2000.nii.gz")
    rows, cols = np.nonzero(mask[12])
    expected = [
        float(cols.min()),
        float(rows.min()),
        float(cols.max() + 1 - cols.min()),
        float(rows.max() + 1 - rows.min()),
    ]
    assert all(a["bbox"] == expected for a in boxes["annotations"])
    assert [a["image_id"] for a in boxes["annotations"]] == [im["id"] for im in boxes["images"]]
    # both splits' slices are windowed alike: nothing but the content tells them apart
    grey = window_volume(volume)
    assert np.array_equal(np.asarray(Image.open(out / "tumor_boxes" / "TCGA_AA_0001_2000_012.png")), grey[12])
    assert np.array_equal(np.asarray(Image.open(out / "tumor_free" / "TCGA_AA_0001_2000_020.png")), grey[20])
    # the training config reads them as tumor and tumor-free records; the recipe's data check accepts them
    records = coco_to_datalist(out / "tumor_boxes")
    assert len(records) == 5 and all(r["label"]["annotations"][0]["label"] == 1 for r in records)
    _check_data(REPO / "bundle" / "sample_data", ["valid"], [out / "tumor_free"], [out / "tumor_boxes"], None, 1)
