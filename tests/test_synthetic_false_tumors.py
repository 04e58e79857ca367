"""``benchmarks/synthetic_false_tumors.py``: each false tumor on a synthetic tumor-free slice gets the class that
explains it, and the script runs on the sample split with the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLE_OUTLINES

from scripts.tumor_free import write_tumor_free_split

sys.path.insert(0, str(REPO / "benchmarks"))
import synthetic_false_tumors as sft  # noqa: E402

THRESHOLD = 0.3


def _slice() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 64x64 source slice, its tumor box (rows and columns 10-19) and the expert outline inside it."""
    source = np.full((64, 64), 100.0, dtype=np.float32)
    boxes = np.zeros((64, 64), dtype=bool)
    boxes[10:20, 10:20] = True
    outline = np.zeros((64, 64), dtype=bool)
    outline[12:18, 12:18] = True
    return source, boxes, outline


def _square(r: int, c: int, side: int = 4) -> np.ndarray:
    out = np.zeros((64, 64), dtype=bool)
    out[r : r + side, c : c + side] = True
    return out


def test_a_crop_is_classed_cropped_whatever_the_tumor() -> None:
    source, boxes, outline = _slice()
    synthetic = source + np.arange(64, dtype=np.float32)  # every pixel changed: the zoomed crop
    tumor = _square(40, 40)
    assert sft.classify(tumor, synthetic, source, boxes, np.zeros((64, 64)), THRESHOLD, outline) == "cropped"


def test_tumor_on_outline_pixels_the_refill_did_not_change_is_the_tumor_left_in_place() -> None:
    source, boxes, _ = _slice()
    outline = np.zeros((64, 64), dtype=bool)
    outline[12:30, 12:18] = True  # the tumor reaches below its box
    synthetic = source.copy()
    synthetic[boxes] = 50.0  # the refill changed the box only
    tumor = _square(22, 13)  # below the box, on the outline
    kind = sft.classify(tumor, synthetic, source, boxes, np.zeros((64, 64)), THRESHOLD, outline)
    assert kind == "on the tumor left in place"
    # without outlines the same tumor is not in the refilled region, and the network drew nothing there on the source
    assert sft.classify(tumor, synthetic, source, boxes, np.zeros((64, 64)), THRESHOLD, None) == "new elsewhere"


def test_tumor_where_the_refill_changed_the_slice_is_in_the_refilled_region() -> None:
    source, boxes, outline = _slice()
    synthetic = source.copy()
    synthetic[8:22, 8:22] = 60.0  # box and margin refilled
    tumor = _square(12, 12)  # on the old outline, but every pixel of it was refilled
    assert sft.classify(tumor, synthetic, source, boxes, np.zeros((64, 64)), THRESHOLD, outline) == (
        "in the refilled region"
    )


def test_tumor_elsewhere_is_drawn_on_the_source_too_or_new() -> None:
    source, boxes, outline = _slice()
    synthetic = source.copy()
    synthetic[boxes] = 60.0
    tumor = _square(40, 40)
    probability = np.zeros((64, 64), dtype=np.float32)
    assert sft.classify(tumor, synthetic, source, boxes, probability, THRESHOLD, outline) == "new elsewhere"
    probability[40:44, 40:43] = 0.5  # 12 of its 16 pixels reach the threshold on the source slice
    assert sft.classify(tumor, synthetic, source, boxes, probability, THRESHOLD, outline) == "drawn on the source too"


def test_runs_on_the_sample_split_with_the_shipped_model(sample_split, tmp_path) -> None:
    free = tmp_path / "tumor_free"
    written = write_tumor_free_split(sample_split, free)["n_written"]
    out = tmp_path / "breakdown.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "synthetic_false_tumors.py"), str(sample_split), str(free)]
    run = subprocess.run(
        [*cmd, "--outlines", str(SAMPLE_OUTLINES), "--json", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["synthetic_slices"] == written > 0
    assert sum(c["slices"] for c in summary["classes"].values()) == summary["with_confident_tumor"]
    assert f"of {written} synthetic tumor-free slices" in run.stdout


def test_a_split_not_made_from_the_source_is_refused_naming_the_image(sample_split, tmp_path) -> None:
    free = tmp_path / "tumor_free"
    write_tumor_free_split(sample_split, free)
    first = sorted(free.glob("*.png"))[0]
    first.rename(free / "not_from_the_source.png")
    annotations = free / "_annotations.coco.json"
    annotations.write_text(annotations.read_text().replace(first.name, "not_from_the_source.png"))
    cmd = [sys.executable, str(REPO / "benchmarks" / "synthetic_false_tumors.py"), str(sample_split), str(free)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if run.returncode == 0:
        pytest.fail(f"accepted a slice that is not from the source split: {run.stdout}")
    assert "not_from_the_source.png" in run.stderr and "not made from that split" in run.stderr
