"""``benchmarks/reoriented_volumes.py``: a volume written again sagittally, coronally or with its slices
transposed gets, with the shipped model, its axial original's label map voxel for voxel."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import BUNDLE, REPO, write_volume_dir

sys.path.insert(0, str(REPO / "benchmarks"))
from reoriented_volumes import STORAGES, back, reoriented  # noqa: E402


def test_a_reoriented_copy_keeps_every_voxel_where_it_was_in_the_patient():
    import itk

    voxels = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (k, j, i)
    image = itk.image_from_array(voxels)
    image.SetSpacing([0.5, 0.7, 3.0])
    image.SetOrigin([1.0, 2.0, 3.0])
    image.SetDirection(itk.matrix_from_array(np.diag([-1.0, -1.0, 1.0])))  # NIfTI's identity, as ITK reads it
    for name, permutation in STORAGES.items():
        copy = reoriented(image, permutation)
        stored = itk.array_from_image(copy)
        assert np.array_equal(back(stored, permutation), voxels), name
        for index in np.ndindex(*stored.shape):  # (k, j, i) of the copy
            original = tuple(np.asarray(index)[np.argsort(permutation)])
            here = copy.TransformIndexToPhysicalPoint([int(v) for v in index[::-1]])
            there = image.TransformIndexToPhysicalPoint([int(v) for v in original[::-1]])
            assert np.allclose(here, there) and stored[index] == voxels[original], (name, index)


def test_sagittal_and_coronal_copies_get_the_axial_label_map(tmp_path):
    write_volume_dir(tmp_path)
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "reoriented_volumes.py"), str(tmp_path), "--bundle", str(BUNDLE)]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["storage"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"axial", "axial, rows right to left", "sagittal", "coronal"}
    assert all(row["volumes"] == 1 and row["label_map_same_as_axial"] == 1 for row in rows.values()), rows
    assert len({row["tumor_slices_found"] for row in rows.values()}) == 1
