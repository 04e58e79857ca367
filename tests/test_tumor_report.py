"""Tumor / possible tumor / no tumor found: the post-processing's tumor score and components, and every front end's report."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLE, SAMPLE_SPLIT, SMOKE_NETWORK, run_bundle
from PIL import Image

from brainseg_monai.cli import main
from scripts.transforms import TumorProbabilityToMaskd
from scripts.tumor_report import (
    SLICE_REPORT_FIELDS,
    TUMOR_REPORT_FIELDS,
    TUMOR_REPORT_FILE,
    row_summary,
    slice_report_path,
    tumor_count_summary,
    tumor_row,
    tumor_summary,
    volume_row,
    write_slice_report,
    write_tumor_report,
)
from scripts.verdict import NO_TUMOR, POSSIBLE_TUMOR, TUMOR


def _scores(prob: np.ndarray) -> torch.Tensor:
    p = torch.from_numpy(prob.astype(np.float32))
    return torch.stack([1 - p, p])


def _two_blobs() -> np.ndarray:
    prob = np.zeros((40, 40), np.float32)
    prob[2:12, 2:12] = 0.95  # confident, 100 px
    prob[20:36, 20:36] = 0.55  # doubtful, 256 px (the largest)
    return prob


def test_components_carry_their_confidence_and_the_image_its_score():
    out = TumorProbabilityToMaskd(threshold=0.5, keep_largest_component=False)({"pred": _scores(_two_blobs())})
    assert out["pred"].shape == (1, 40, 40) and int(out["pred"].sum()) == 356
    assert out["pred_tumor_score"] == pytest.approx(0.95)
    confidences = sorted(c["confidence"] for c in out["pred_components"])
    assert confidences == pytest.approx([0.55, 0.95])
    assert sorted(c["area"] for c in out["pred_components"]) == [100, 256]


def test_min_confidence_drops_doubtful_components_before_the_largest_is_kept():
    t = TumorProbabilityToMaskd(threshold=0.5, keep_largest_component=True, min_confidence=0.8)
    out = t({"pred": _scores(_two_blobs())})
    assert int(out["pred"].sum()) == 100  # the confident blob, though the doubtful one is larger
    assert [c["bbox"] for c in out["pred_components"]] == [[2.0, 2.0, 10.0, 10.0]]
    without = TumorProbabilityToMaskd(threshold=0.5, keep_largest_component=True)({"pred": _scores(_two_blobs())})
    assert int(without["pred"].sum()) == 256


def test_no_tumor_found_is_an_empty_mask_with_a_score_below_the_operating_point():
    prob = np.full((30, 30), 0.1, np.float32)
    prob[10:14, 10:14] = 0.6
    out = TumorProbabilityToMaskd(threshold=0.5, min_confidence=0.7)({"pred": _scores(prob)})
    assert int(out["pred"].sum()) == 0 and out["pred_components"] == []
    assert out["pred_tumor_score"] == pytest.approx(0.6)
    nothing = TumorProbabilityToMaskd(threshold=0.5)({"pred": _scores(np.zeros((8, 8)))})
    assert nothing["pred_tumor_score"] == 0.0 and nothing["pred_components"] == []


def test_fill_holes_closes_a_ring():
    prob = np.zeros((30, 30), np.float32)
    prob[5:25, 5:25] = 0.9
    prob[10:20, 10:20] = 0.1
    ring = TumorProbabilityToMaskd(threshold=0.5)({"pred": _scores(prob)})["pred"]
    filled = TumorProbabilityToMaskd(threshold=0.5, fill_holes=True)({"pred": _scores(prob)})["pred"]
    assert int(ring.sum()) == 300 and int(filled.sum()) == 400


@pytest.mark.parametrize("value", [-0.1, 1.0, 2])
def test_min_confidence_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match="min_confidence: must be a component confidence in"):
        TumorProbabilityToMaskd(min_confidence=value)


def test_candidates_below_the_operating_point_are_possible_tumors_not_dropped():
    t = TumorProbabilityToMaskd(threshold=0.5, min_confidence=0.8, possible_min_confidence=0.5)
    out = t({"pred": _scores(_two_blobs())})
    assert out["pred_verdict"] == TUMOR
    assert int(out["pred"].sum()) == 100  # the confident blob is the tumor
    assert int(out["pred_possible"].sum()) == 256 and out["pred_possible"][0, 20:36, 20:36].all()
    assert [c["confidence"] for c in out["pred_possible_components"]] == pytest.approx([0.55])
    doubtful = np.where(_two_blobs() > 0.9, 0.0, _two_blobs())  # only the doubtful blob is left
    alone = t({"pred": _scores(doubtful)})
    assert alone["pred_verdict"] == POSSIBLE_TUMOR and alone["pred_components"] == []
    assert int(alone["pred"].sum()) == 0 and int(alone["pred_possible"].sum()) == 256
    higher = TumorProbabilityToMaskd(threshold=0.5, min_confidence=0.8, possible_min_confidence=0.6)
    assert higher({"pred": _scores(doubtful)})["pred_verdict"] == NO_TUMOR  # 0.55 is below both operating points
    default = TumorProbabilityToMaskd(threshold=0.5, min_confidence=0.8)  # no possible level unless asked
    assert default({"pred": _scores(doubtful)})["pred_possible_components"] == []


def test_possible_min_confidence_above_min_confidence_is_refused():
    with pytest.raises(ValueError, match="possible_min_confidence: must be in"):
        TumorProbabilityToMaskd(min_confidence=0.5, possible_min_confidence=0.6)


def test_report_rows_sentences_and_atomic_csv(tmp_path: Path):
    rows = [
        tumor_row("a.png", 0.9, [{"area": 10}, {"area": 5}]),
        tumor_row("b.png", 0.2, []),
        tumor_row("c.png", 0.4, [], possible_components=[{"area": 7}]),
    ]
    assert rows[0] == {"file_name": "a.png", "verdict": TUMOR, "tumor_found": True, "possible_tumor": False,
                       "tumor_score": 0.9, "n_components": 2, "tumor_area_px": 15, "n_possible": 0,
                       "possible_area_px": 0, "input_unusual": False}  # fmt: skip
    assert rows[2]["verdict"] == POSSIBLE_TUMOR and rows[2]["possible_area_px"] == 7 and not rows[2]["tumor_found"]
    assert tumor_summary(rows[:2]) == "tumor found on 1 of 2 images"
    assert tumor_summary(rows) == "tumor found on 1 of 3 images; possible tumor on 1 more"
    assert tumor_summary(rows[1:2], "slices") == "no tumor found on any of 1 slices"
    assert tumor_count_summary(7, 24, "slices") == "tumor found on 7 of 24 slices"
    # possible tumors alone: never "no tumor found" (the verdict of nothing shown) beside them
    assert tumor_summary(rows[1:], "slices") == "possible tumor on 1 of 2 slices, tumor on none"
    assert tumor_count_summary(0, 2, "slices", 2) == "possible tumor on 2 of 2 slices, tumor on none"
    path = write_tumor_report(rows, tmp_path / "r" / TUMOR_REPORT_FILE)
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == TUMOR_REPORT_FIELDS and read[1]["tumor_found"] == "False"
    assert [r["verdict"] for r in read] == [TUMOR, NO_TUMOR, POSSIBLE_TUMOR]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [TUMOR_REPORT_FILE]


def test_volume_row_counts_slices_by_verdict_and_flags_the_volume_not_a_count():
    def report(verdict, unusual=False):
        comps = [{"area": 4, "confidence": 0.9}] if verdict == TUMOR else []
        possible = [{"area": 3, "confidence": 0.4}] if verdict == POSSIBLE_TUMOR else []
        return {"verdict": verdict, "tumor_score": 0.9 if comps else 0.4, "components": comps,
                "possible_components": possible, "input_unusual": unusual}  # fmt: skip

    reports = [report(TUMOR), report(POSSIBLE_TUMOR), report(POSSIBLE_TUMOR, True), report(NO_TUMOR)]
    row = volume_row("case.nii.gz", reports)
    assert row["verdict"] == TUMOR and row["tumor_found"] and row["possible_tumor"]
    # counts, for a spreadsheet; the sentence is row_summary's
    assert (row["n_slices"], row["slices_with_tumor"], row["slices_with_possible_tumor"]) == (4, 1, 2)
    assert row_summary(row) == "tumor (tumor found on 1 of 4 slices; possible tumor on 2 of 4 slices)"
    assert row_summary(tumor_row("a.png", 0.2, [])) == NO_TUMOR  # an image: no slice counts
    assert row["input_unusual"] is False and row["unusual_slices"] == 1  # a bool, and the count apart
    assert row["tumor_area_px"] == 4 and row["possible_area_px"] == 6
    only_possible = volume_row("v.nii.gz", [report(NO_TUMOR, True), report(POSSIBLE_TUMOR, True), report(NO_TUMOR)])
    assert only_possible["verdict"] == POSSIBLE_TUMOR and only_possible["input_unusual"] is True
    assert row_summary(only_possible) == "possible tumor (possible tumor on 1 of 3 slices, tumor on none)"


def test_slice_report_has_a_row_per_slice_with_the_neighbour_rules_verdict(tmp_path: Path):
    tumor = [{"area": 4, "confidence": 0.9}]
    reports = [
        {"index": 0, "verdict": NO_TUMOR, "tumor_score": 0.1, "components": [], "input_unusual": True},
        {"index": 1, "verdict": TUMOR, "tumor_score": 0.9, "components": tumor, "possible_components": [],
         "input_unusual": False, "support": 0.5},
        # demoted by NeighbourSupport.apply: its tumor became a possible tumor, its score stays
        {"index": 2, "verdict": POSSIBLE_TUMOR, "tumor_score": 0.8, "components": [], "possible_components": tumor,
         "input_unusual": False, "support": 0.0, "unsupported": True},
    ]  # fmt: skip
    path = slice_report_path(tmp_path / "out" / "case.nii.gz")
    assert path == str(tmp_path / "out" / "case_slices.csv")  # beside the mask, named after it
    assert write_slice_report(reports, path) == path
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == SLICE_REPORT_FIELDS
    assert [(r["slice"], r["verdict"], r["tumor_found"], r["possible_tumor"]) for r in read] == [
        ("0", NO_TUMOR, "False", "False"),
        ("1", TUMOR, "True", "False"),
        ("2", POSSIBLE_TUMOR, "False", "True"),
    ]
    assert [(r["tumor_score"], r["neighbour_support"], r["demoted_by_neighbours"]) for r in read] == [
        ("0.1", "", "False"),
        ("0.9", "0.5", "False"),
        ("0.8", "0.0", "True"),
    ]
    assert [(r["tumor_area_px"], r["possible_area_px"], r["input_unusual"]) for r in read] == [
        ("0", "0", "True"),
        ("4", "0", "False"),
        ("0", "4", "False"),
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_slices.csv"]  # atomic: nothing else


def test_the_summary_counts_found_tumors_not_scores_above_zero_also_in_rows_without_a_verdict():
    # rows as a report from before the three-level verdict has them: tumor_found, a score, no verdict;
    # a slice below the operating point still has a score above 0 (its best candidate's)
    rows = [
        {"file_name": "a", "tumor_found": True, "tumor_score": 0.9},
        {"file_name": "b", "tumor_found": False, "tumor_score": 0.3},
        {"file_name": "c", "tumor_found": False, "tumor_score": 0.05},
    ]
    assert tumor_summary(rows, "slices") == "tumor found on 1 of 3 slices"
    assert tumor_summary(rows[1:], "slices") == "no tumor found on any of 2 slices"


def _blank_and_samples(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir()
    for src in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:n]:
        shutil.copy(src, folder / src.name)
    Image.fromarray(np.zeros((320, 320), np.uint8)).save(folder / "blank.png")
    return sorted(folder.iterdir())


def _report(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file_name"]: row for row in csv.DictReader(f)}


def test_bundle_inference_writes_the_tumor_report(tmp_path: Path):
    inputs = _blank_and_samples(tmp_path / "in")
    out = tmp_path / "out"
    proc = run_bundle(
        "--config_file", "configs/inference.json", "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(out)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(out / TUMOR_REPORT_FILE)
    assert set(report) == {p.name for p in inputs}
    for p in inputs:
        mask = np.asarray(Image.open(out / f"{p.stem}.png"))
        row = report[p.name]
        assert (row["tumor_found"] == "True") == bool((mask == 255).any()), p.name
        assert int(row["tumor_area_px"]) == int((mask == 255).sum()), p.name
        assert int(row["possible_area_px"]) == int((mask == 128).sum()), p.name
    assert "tumor found on" in proc.stdout + proc.stderr


def test_cli_segment_reports_each_image_and_each_volume_slice(smoke_model, tmp_path: Path, capsys):
    itk = pytest.importorskip("itk")
    inputs = _blank_and_samples(tmp_path / "in")
    slices = [np.asarray(Image.open(p).convert("L").resize((64, 64)), np.float32) for p in inputs]
    itk.imwrite(itk.image_from_array(np.stack(slices)), str(tmp_path / "in" / "case.nii.gz"))
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "in"), "--output-dir", str(out), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    report = _report(out / TUMOR_REPORT_FILE)
    assert set(report) == {p.name for p in inputs} | {"case.nii.gz"}
    for p in inputs:
        mask = np.asarray(Image.open(out / f"{p.stem}.png"))
        assert set(np.unique(mask)) <= {0, 128, 255}  # the label map: 255 tumor, 128 possible tumor
        assert (report[p.name]["tumor_found"] == "True") == bool((mask == 255).any())
        assert (report[p.name]["possible_tumor"] == "True") == bool((mask == 128).any())
        said = TUMOR if (mask == 255).any() else (POSSIBLE_TUMOR if (mask == 128).any() else NO_TUMOR)
        assert report[p.name]["verdict"] == said
        assert str(out / f"{p.stem}.png") in captured.out.splitlines()  # stdout: one mask path per line
        assert any(line.startswith(f"{p}: {said} (tumor score") for line in captured.err.splitlines())
    volume = itk.array_from_image(itk.imread(str(out / "case.nii.gz")))
    tumor, possible = (volume == 1).reshape(3, -1).any(axis=1), (volume == 2).reshape(3, -1).any(axis=1)
    row = report["case.nii.gz"]
    assert (row["n_slices"], row["slices_with_tumor"]) == ("3", str(int(tumor.sum())))
    assert row["slices_with_possible_tumor"] == str(int((possible & ~tumor).sum()))
    with open(out / "case_slices.csv", newline="", encoding="utf-8") as f:  # and one row per slice
        slices_read = list(csv.DictReader(f))
    assert [r["slice"] for r in slices_read] == ["0", "1", "2"]
    assert [r["tumor_found"] == "True" for r in slices_read] == tumor.tolist()
    assert [r["verdict"] == POSSIBLE_TUMOR for r in slices_read] == (possible & ~tumor).tolist()
    for p in inputs:
        assert not (out / f"{p.stem}_slices.csv").exists()  # images have no per-slice report
    assert report["case.nii.gz"]["input_unusual"] in ("True", "False")
    assert "per-image report" in captured.err


def test_cli_evaluate_rows_say_whether_a_tumor_was_found(smoke_model, tmp_path: Path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    with open(out / "metrics_per_image.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for row in rows:
        mask = np.asarray(Image.open(out / "masks" / (Path(row["file_name"]).stem + ".png")))
        assert (row["tumor_found"] == "True") == bool((mask == 255).any())
        assert (row["possible_tumor"] == "True") == bool((mask == 128).any())
        assert 0.0 <= float(row["tumor_score"]) <= 1.0
    found = sum(r["tumor_found"] == "True" for r in rows)
    possible = sum(r["tumor_found"] == "False" and r["possible_tumor"] == "True" for r in rows)
    assert tumor_count_summary(found, 12, possible=possible) in capsys.readouterr().out


def test_shipped_model_finds_no_tumor_on_a_blank_slice():
    from scripts.predictor import BundlePredictor

    prediction = BundlePredictor(BUNDLE, device="cpu").predict_array(np.zeros((256, 256), np.uint8), details=True)
    assert not prediction.tumor_found and not prediction.mask.any()


def test_min_area_fraction_drops_specks():
    prob = np.zeros((40, 40), np.float32)
    prob[2:4, 2:4] = 0.99  # 4 px = 0.25% of the image
    prob[20:30, 20:30] = 0.9
    t = TumorProbabilityToMaskd(threshold=0.5, keep_largest_component=False, min_area_fraction=0.01)
    out = t({"pred": _scores(prob)})
    assert [c["area"] for c in out["pred_components"]] == [100]
    assert out["pred_tumor_score"] == pytest.approx(0.9)  # the speck does not count, not even for the score
    with pytest.raises(ValueError, match="min_area_fraction: must be a fraction of the image"):
        TumorProbabilityToMaskd(min_area_fraction=1.0)


# --------------------------------------------------------------------------- reports a person opens


def test_a_file_name_that_a_spreadsheet_would_run_is_written_as_text_and_read_back(tmp_path):
    """``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM(...)``, ``-2+3``: a spreadsheet runs cells that start so. They are
    written with a leading quote (shown as text) and read back as the names they are."""
    from scripts.tumor_report import read_tumor_report, tumor_row, write_tumor_report

    names = ['=HYPERLINK("http://x","y").jpg', "+cmd|calc.jpg", "@SUM(1).jpg", "-2+3.jpg", "\tx.jpg", "plain.jpg"]
    path = write_tumor_report([tumor_row(n, 0.1, [], False) for n in names], tmp_path / "tumor_report.csv")
    with open(path, newline="", encoding="utf-8") as f:
        cells = [row["file_name"] for row in csv.DictReader(f)]
    assert cells == ["'" + n for n in names[:-1]] + ["plain.jpg"]
    assert [r["file_name"] for r in read_tumor_report(path)] == names


def test_a_file_name_that_is_not_utf8_keeps_the_report(tmp_path):
    """A Latin-1 name on a Linux disk reaches Python as surrogates: written as its own bytes, read back the same;
    a report a spreadsheet saved with a byte order mark, or in Latin-1, is read, not refused."""
    from scripts.tumor_report import read_tumor_report, tumor_row, write_tumor_report

    name = b"scan_\xe9.jpg".decode("utf-8", "surrogateescape")
    path = write_tumor_report([tumor_row(name, 0.9, [], False)], tmp_path / "tumor_report.csv")
    assert b"scan_\xe9.jpg" in (tmp_path / "tumor_report.csv").read_bytes()
    assert read_tumor_report(path)[0]["file_name"] == name
    text = (tmp_path / "tumor_report.csv").read_bytes().replace(b"\xe9", b"e")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text)  # Excel's "CSV UTF-8"
    assert read_tumor_report(tmp_path / "bom.csv")[0]["file_name"] == "scan_e.jpg"
    (tmp_path / "latin1.csv").write_bytes(text.replace(b"scan_e", "scan_ü".encode("latin-1")))
    assert read_tumor_report(tmp_path / "latin1.csv")[0]["file_name"].startswith("scan_")


def test_a_second_run_into_the_folder_adds_to_its_report(tmp_path, capsys):
    """``brainseg segment`` and ``monai.bundle run``, one image, then another into the same folder: the report
    holds both rows (the first image's mask is still there); a file there that is no report stops a run before
    anything is written."""
    first, second = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]
    out = tmp_path / "out"
    for image in (first, second):
        assert main(["segment", str(image), "--output-dir", str(out), "--device", "cpu"]) == 0
    with open(out / "tumor_report.csv", newline="", encoding="utf-8") as f:
        assert [r["file_name"] for r in csv.DictReader(f)] == [first.name, second.name]
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.startswith("tumor found on 1 of 1 images") and "(and 1 earlier row of other inputs)" in said

    # the bundle's own run into that folder, the second image again: the first one's row stays, the second's renewed
    folder = tmp_path / "again"
    folder.mkdir()
    shutil.copy(second, folder)
    (out / "tumor_report.csv").write_text(
        (out / "tumor_report.csv").read_text(encoding="utf-8").replace(",tumor,", ",stale,", 2), encoding="utf-8"
    )
    proc = run_bundle("--config_file", "configs/inference.json", "--dataset_dir", str(folder), "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "tumor_report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file_name"], r["verdict"]) for r in rows] == [(first.name, "stale"), (second.name, "tumor")]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "tumor_report.csv").write_text("patient,notes\n1,keep me\n", encoding="utf-8")
    assert main(["segment", str(first), "--output-dir", str(foreign), "--device", "cpu"]) != 0
    assert "not a tumor report" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["tumor_report.csv"]
    assert (foreign / "tumor_report.csv").read_text(encoding="utf-8") == "patient,notes\n1,keep me\n"
