"""``benchmarks/rectangular_slices.py``: slices cut to their head's columns, padded (the bundle) against stretched."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import BUNDLE, REPO, SAMPLE_ROOT, write_volume_dir

sys.path.insert(0, str(REPO / "benchmarks"))
from rectangular_slices import head_columns  # noqa: E402


def test_head_columns_keep_the_head_and_the_margin():
    grey = np.zeros((20, 100), np.float32)
    grey[5:15, 30:61] = 200.0
    assert head_columns(grey, 0.0) == (30, 61) and head_columns(grey, 0.05) == (25, 66)
    assert head_columns(np.stack([grey, np.roll(grey, 20, axis=1)]), 0.0) == (30, 81), "any slice of a volume"
    assert head_columns(np.zeros((4, 8)), 0.1) == (0, 8), "no head: the whole width"


def test_the_benchmark_segments_each_cut_slice_three_ways(tmp_path):
    write_volume_dir(tmp_path)
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "rectangular_slices.py"), "--dataset", str(SAMPLE_ROOT)]
    cmd += ["--lgg-dir", str(tmp_path), "--bundle", str(BUNDLE), "--margin", "0", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{") :]) == results, "what is printed is what is written"
    valid = {row["valid, cut to the head's columns"]: row for row in results["valid"]}
    volumes = {row["volumes, cut to the head's columns"]: row for row in results["volumes"]}
    assert set(valid) == set(volumes) == {"padded", "stretched", "uncut"}
    assert len({row["images"] for row in valid.values()}) == 1 and valid["padded"]["images"] >= 1
    assert all(row["volumes"] == 1 for row in volumes.values())
