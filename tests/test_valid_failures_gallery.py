"""``benchmarks/valid_failures_gallery.py``: which row a failing slice belongs in, and the picture drawn on the
sample split with the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE_OUTLINES
from PIL import Image

from scripts.tumor_free import write_tumor_free_split
from scripts.verdict import NO_TUMOR, POSSIBLE_TUMOR, TUMOR

sys.path.insert(0, str(REPO / "benchmarks"))
import valid_failures_gallery as vfg  # noqa: E402

SCRIPT = str(REPO / "benchmarks" / "valid_failures_gallery.py")


def test_a_slice_fails_by_its_verdict_or_an_outline_far_off():
    assert vfg.failure_row(POSSIBLE_TUMOR, None) == "possible tumor only"
    assert vfg.failure_row(NO_TUMOR, 0.0) == "nothing shown"
    assert vfg.failure_row(TUMOR, vfg.FAR_OFF - 0.01) == "outline far off"
    assert vfg.failure_row(TUMOR, vfg.FAR_OFF) is None and vfg.failure_row(TUMOR, None) is None
    assert set(vfg.SYNTHETIC_ROWS.values()) <= set(vfg.ROWS)


def test_draws_the_failures_of_the_sample_split(sample_split, tmp_path):
    free = tmp_path / "tumor_free"
    write_tumor_free_split(sample_split, free)
    png, details = tmp_path / "failures.png", tmp_path / "failures.json"
    cmd = [sys.executable, SCRIPT, str(sample_split), str(free), str(png), "--outlines", str(SAMPLE_OUTLINES)]
    run = subprocess.run([*cmd, "--json", str(details)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(details.read_text())
    assert list(result["summary"]["rows"]) == list(vfg.ROWS)
    slices = result["slices"]
    assert {s["verdict"] for s in slices["possible tumor only"]} <= {POSSIBLE_TUMOR}
    assert {s["verdict"] for s in slices["nothing shown"]} <= {NO_TUMOR}
    assert all(s["verdict"] == TUMOR and s["outline_dice"] <= vfg.FAR_OFF for s in slices["outline far off"])
    assert all(s["verdict"] == TUMOR for row in vfg.ROWS[3:] for s in slices[row])
    assert sum(map(len, slices.values())) > 0, "the shipped model fails somewhere on the sample split"
    with Image.open(png) as image:
        assert image.size[0] > 400 and image.size[1] > 400 and image.mode == "P"  # a palette: small enough for docs


def test_an_output_inside_an_input_is_refused_before_any_work(sample_split, tmp_path, monkeypatch):
    free = tmp_path / "tumor_free"
    write_tumor_free_split(sample_split, free)
    inside = sample_split / "failures.png"
    argv = [SCRIPT, str(sample_split), str(free), str(inside), "--outlines", str(SAMPLE_OUTLINES)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("BRAINSEG_BUNDLE", str(REPO / "bundle"))  # main() sets it: restored after the test
    monkeypatch.setattr(vfg, "_predictor", lambda *a: pytest.fail("the model was loaded before the output was checked"))
    with pytest.raises(SystemExit, match="failures.png"):
        vfg.main()
    assert not inside.exists()
