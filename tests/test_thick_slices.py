"""``benchmarks/thick_slices.py``: a volume made into thick coronal or sagittal slices is segmented, with its
spacing read, as its axial original is; squeezed as it lies, it is not."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import BUNDLE, REPO, write_volume_dir

sys.path.insert(0, str(REPO / "benchmarks"))
from reoriented_volumes import STORAGES, back  # noqa: E402
from thick_slices import ACQUISITIONS, acquisition, thick  # noqa: E402


def test_thick_slices_average_their_voxels_and_keep_the_extent_in_their_spacing():
    import itk

    voxels = np.arange(2 * 7 * 4, dtype=np.float32).reshape(2, 7, 4)  # (k, j, i)
    assert np.allclose(thick(voxels, 1, 3)[:, 0], voxels[:, 0:3].mean(axis=1))
    assert np.allclose(thick(voxels, 1, 3)[:, 2], voxels[:, 6]), "a last partial block: what it holds"
    image = itk.image_from_array(voxels)
    image.SetSpacing([0.5, 0.7, 3.0])
    for name, np_axis in ACQUISITIONS.items():
        copy = acquisition(image, np_axis, 3, name, true_spacing=True)
        assert np.allclose(back(itk.array_from_image(copy), STORAGES[name]), thick(voxels, np_axis, 3)), name
        spacing = [0.5, 0.7, 3.0]
        spacing[2 - np_axis] *= 3
        assert sorted(copy.GetSpacing()) == sorted(spacing), name  # the same lengths, along the copy's axes
        squeezed = acquisition(image, np_axis, 3, name, true_spacing=False)
        assert list(squeezed.GetSpacing()) == [1.0, 1.0, 1.0], name


def test_thick_copies_read_with_their_spacing_find_the_tumor_the_original_finds(tmp_path):
    write_volume_dir(tmp_path)
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "thick_slices.py"), str(tmp_path), "--bundle", str(BUNDLE)]
    proc = subprocess.run(
        [*cmd, "--thickness", "4", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["volume"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == [
        "original, axial",
        "coronal, 4 voxels thick, square pixels",
        "coronal, 4 voxels thick, as they lie",
        "sagittal, 4 voxels thick, square pixels",
        "sagittal, 4 voxels thick, as they lie",
    ]
    found = {name: row["tumor_slices_found"] for name, row in rows.items()}
    assert found["original, axial"].startswith("1 of 1"), found
    assert found["coronal, 4 voxels thick, square pixels"] == found["sagittal, 4 voxels thick, square pixels"]
    assert found["coronal, 4 voxels thick, square pixels"] == found["original, axial"], found
    assert found["coronal, 4 voxels thick, as they lie"].startswith("0 of 1"), found
    bad = subprocess.run([*cmd, "--thickness", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode != 0 and "--thickness" in bad.stderr
