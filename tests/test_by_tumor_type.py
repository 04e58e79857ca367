"""``benchmarks/by_tumor_type.py``: a ``brainseg evaluate`` run's figures per tumor type, from the outlines' index."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_OUTLINES, SAMPLE_SPLIT

sys.path.insert(0, str(REPO / "benchmarks"))
import by_tumor_type  # noqa: E402


def _index(path: Path, labels: dict[str, str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "figshare_index", "figshare_label", "coco_category"])
        for i, (name, label) in enumerate(labels.items()):
            writer.writerow([name, i, label, 1])
    return path


def test_figures_count_found_possible_and_nothing_shown_per_type():
    row = {"outline_dice": "0.5"}
    rows = [
        {**row, "file_name": "a.jpg", "tumor_found": "True", "possible_tumor": "False"},
        {**row, "file_name": "b.jpg", "tumor_found": "False", "possible_tumor": "True", "outline_dice": "0.1"},
        {**row, "file_name": "c.jpg", "tumor_found": "False", "possible_tumor": "False", "outline_dice": ""},
        {**row, "file_name": "d.jpg", "tumor_found": "True", "possible_tumor": "False"},
    ]
    figures = by_tumor_type.figures_by_type(rows, {"a.jpg": "glioma", "b.jpg": "glioma", "c.jpg": "glioma"})
    assert list(figures) == ["glioma", "not typed"]
    glioma = figures["glioma"]
    assert (glioma["images"], glioma["found"], glioma["possible_only"], glioma["nothing_shown"]) == (3, 1, 1, 1)
    assert glioma["outline_dice_mean"] == pytest.approx(0.3)  # the image without an outline left out
    assert figures["not typed"]["found_rate"] == 1.0


def test_an_index_with_a_wrong_label_or_columns_is_refused_naming_the_file(tmp_path: Path):
    bad = _index(tmp_path / "index.csv", {"a.jpg": "1", "b.jpg": "glioma"})
    with pytest.raises(ValueError, match=r"index.csv, line 3: figshare_label 'glioma' is not 1, 2 or 3"):
        by_tumor_type.read_tumor_types(bad)
    other = tmp_path / "other.csv"
    other.write_text("name,label\na.jpg,1\n")
    with pytest.raises(ValueError, match="other.csv: expected the columns file_name and figshare_label"):
        by_tumor_type.read_tumor_types(other)


def test_runs_on_a_real_evaluate_output(tmp_path: Path):
    out = tmp_path / "eval"
    brainseg = [sys.executable, "-m", "brainseg_monai.cli"]
    run = subprocess.run(
        [*brainseg, "evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--outlines", str(SAMPLE_OUTLINES)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in SAMPLE_SPLIT.glob("*.jpg"))
    index = _index(tmp_path / "index.csv", {n: "123"[i % 3] for i, n in enumerate(names[:-1])})  # the last untyped
    figures_json = tmp_path / "by_type.json"
    script = REPO / "benchmarks" / "by_tumor_type.py"
    cmd = [sys.executable, str(script), str(out / "metrics_per_image.csv"), str(index), "--json", str(figures_json)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    figures = json.loads(figures_json.read_text())
    assert list(figures) == ["meningioma", "glioma", "pituitary tumor", "not typed"]
    assert sum(f["images"] for f in figures.values()) == len(names) and figures["not typed"]["images"] == 1
    for f in figures.values():
        assert f["found"] + f["possible_only"] + f["nothing_shown"] == f["images"]
    assert "glioma" in run.stdout
    # not a metrics file: one line naming it
    run = subprocess.run([sys.executable, str(script), str(index), str(index)], capture_output=True, text=True)
    assert run.returncode != 0 and "index.csv: not a brainseg evaluate metrics_per_image.csv" in run.stderr
