"""The ``brainseg`` command: exit codes, one-line errors, and the files it writes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import BUNDLE, SAMPLE_ROOT, SAMPLE_SPLIT, SMOKE_NETWORK, smoke_train_argv
from PIL import Image

from brainseg_monai.cli import main


def _brainseg(*args: str):
    """The installed console script in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "brainseg_monai.cli", *args], capture_output=True, text=True, timeout=600
    )


# -- check-data --------------------------------------------------------------------------


def test_check_data_accepts_the_sample_split(capsys):
    assert main(["check-data", str(SAMPLE_SPLIT)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_data_counts_images_annotations_tumor_free_images_and_problems(sample_split, capsys):
    coco = json.loads((sample_split / "_annotations.coco.json").read_text())
    source = coco["images"][0]
    shutil.copy(sample_split / source["file_name"], sample_split / "free.jpg")
    coco["images"].append({**source, "id": 999, "file_name": "free.jpg"})  # listed, no annotation: tumor-free
    (sample_split / "_annotations.coco.json").write_text(json.dumps(coco))
    assert main(["check-data", str(sample_split)]) == 0
    counts = f"{sample_split}: 13 images, 12 tumor annotations, 1 tumor-free images"
    assert capsys.readouterr().out.splitlines() == [f"{counts}; OK (0 warning(s))"]
    shutil.copy(sample_split / "free.jpg", sample_split / "unlisted.jpg")
    coco["annotations"][0]["bbox"][2] = -5
    (sample_split / "_annotations.coco.json").write_text(json.dumps(coco))
    assert main(["check-data", str(sample_split)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"{counts}; 1 error(s), 1 warning(s)"


def test_check_data_and_datalist_accept_a_byte_order_mark(sample_split, capsys):
    from scripts.coco import ANNOTATION_FILE, coco_to_datalist

    expected = coco_to_datalist(sample_split)
    path = sample_split / ANNOTATION_FILE
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as some Windows editors save UTF-8
    assert main(["check-data", str(sample_split)]) == 0
    assert "OK" in capsys.readouterr().out
    assert coco_to_datalist(sample_split) == expected


def test_check_data_reports_each_error_on_one_line_and_fails(sample_split, capsys):
    coco = json.loads((sample_split / "_annotations.coco.json").read_text())
    coco["annotations"][0]["bbox"][2] = -5
    coco["images"][1]["file_name"] = "../outside.jpg"
    (sample_split / "_annotations.coco.json").write_text(json.dumps(coco))
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err.splitlines()
    ann_id, img_id = coco["annotations"][0]["id"], coco["images"][1]["id"]
    assert any(f"annotations[id={ann_id}].bbox" in line and "non-positive size" in line for line in err)
    assert any(f"images[id={img_id}].file_name" in line and "escapes the split folder" in line for line in err)
    assert err[-1].endswith("2 error(s), 1 warning(s)")  # the image no longer listed is a warning


def test_check_data_warning_alone_passes(sample_split, capsys):
    shutil.copy(next(sample_split.glob("*.jpg")), sample_split / "unlisted.jpg")
    assert main(["check-data", str(sample_split)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "unlisted.jpg is not listed" in captured.err


def test_errors_are_one_line_without_traceback_unless_debug(tmp_path):
    proc = _brainseg("check-data", str(tmp_path / "missing"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "split folder not found" in proc.stderr
    proc = _brainseg("segment", str(tmp_path / "missing.png"), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"brainseg segment: error: {tmp_path / 'missing.png'}: no such file or folder"
    proc = _brainseg("--debug", "segment", str(tmp_path / "missing.png"), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_lists_every_command():
    proc = _brainseg("--help")
    assert proc.returncode == 0
    for command in ("check-data", "train", "evaluate", "segment"):
        assert command in proc.stdout


def test_segment_help_names_the_report_and_the_label_values(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "OUTPUT_DIR/tumor_report.csv has one row per input" in text
    assert "in a PNG 255 is tumor, 128 possible tumor" in text and "1 is tumor, 2 possible tumor" in text
    assert "--min-confidence X" in text


def test_package_help_says_what_the_zip_holds(capsys):
    for argv in (["--help"], ["package", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "this package's source" not in text
        assert "its own code (scripts/)" in text and "not the brainseg application" in text


# -- --min-confidence --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan", "half"])
def test_min_confidence_must_be_a_fraction_below_one(value, capsys):
    for command in ("segment", "evaluate"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "x", "--output-dir", "out", "--min-confidence", value])
        assert exit_.value.code == 2 and "--min-confidence" in capsys.readouterr().err


def _shipped_operating_point() -> tuple[float, float]:
    """The bundle's ``min_confidence`` and ``possible_min_confidence``."""
    config = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    return float(config["min_confidence"]), float(config["possible_min_confidence"])


def test_min_confidence_reaches_the_config_as_numbers_and_keeps_possible_tumors_below_it():
    from brainseg_monai.cli import _operating_point, build_parser

    def overrides(*argv: str) -> dict:
        return _operating_point(
            build_parser().parse_args(["segment", "x", "--output-dir", "o", *argv]), "inference.json"
        )

    _, possible = _shipped_operating_point()
    above, below = round((possible + 1) / 2, 3), round(possible / 2, 3)
    assert overrides() == {}
    assert overrides("--min-confidence", str(above)) == {"min_confidence": above}  # the possible bound fits under it
    assert overrides("--min-confidence", str(below)) == {"min_confidence": below, "possible_min_confidence": below}


def test_segment_min_confidence_moves_the_operating_point(tmp_path):
    """Shipped model: the first sample image scores about 0.9, a tumor at the bundle's operating point, a possible
    tumor at 0.95."""
    images = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]
    out = tmp_path / "out"
    args = ["segment", *map(str, images), "--output-dir", str(out), "--device", "cpu", "--min-confidence", "0.95"]
    assert main(args) == 0
    from scripts.tumor_report import read_tumor_report

    shipped, _ = _shipped_operating_point()
    rows = read_tumor_report(out / "tumor_report.csv")
    assert all(row["verdict"] != "tumor" for row in rows if float(row["tumor_score"]) < 0.95)
    assert any(row["verdict"] == "possible tumor" and float(row["tumor_score"]) >= shipped for row in rows)
    mask = np.asarray(Image.open(out / (images[0].stem + ".png")))
    assert not (mask == 255).any() and (mask == 128).any()


def test_evaluate_min_confidence_below_the_possible_bound_runs(tmp_path):
    """At 0.2, below the bundle's possible_min_confidence, the bound follows: no refusal, more tumors."""
    _, possible = _shipped_operating_point()
    assert 0.2 < possible
    out = tmp_path / "ev"
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--device", "cpu", "--min-confidence", "0.2"]
    assert main(args) == 0
    import csv

    with open(out / "metrics_per_image.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert all((row["tumor_found"] == "True") == (float(row["tumor_score"]) >= 0.2) for row in rows)
    # the possible-tumor bound followed X down: every candidate from 0.2 on is a tumor, none is "possible"
    summary = json.loads((out / "metrics_summary.json").read_text(encoding="utf-8"))
    assert summary["n_images_possible_tumor"] == 0 and summary["n_images_tumor_found"] == sum(
        float(row["tumor_score"]) >= 0.2 for row in rows
    )


# -- train -------------------------------------------------------------------------------


def test_train_refuses_bad_data_before_starting(tmp_path, capsys):
    root = tmp_path / "dataset"
    shutil.copytree(SAMPLE_SPLIT, root / "train")
    shutil.copytree(SAMPLE_SPLIT, root / "valid")
    (root / "valid" / "_annotations.coco.json").write_text('{"images": [')  # truncated
    out = tmp_path / "run"
    assert main(["train", "--dataset-dir", str(root), "--output-dir", str(out), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "malformed or truncated JSON" in err and "training not started" in err
    assert not (out / "models").exists()


def test_train_runs_the_bundle_and_saves_the_best_model(tmp_path):
    out = tmp_path / "run"
    code = main(smoke_train_argv(SAMPLE_ROOT, out, "--train-split", "valid", "--val-split", "valid"))
    assert code == 0
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "checkpoint_latest.pt").is_file()
    assert any((out / "eval").glob("events.out.tfevents.*"))


# -- segment -----------------------------------------------------------------------------


def test_segment_folder_keeps_going_past_a_bad_file(smoke_model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]
    for f in good:
        shutil.copy(f, images)
    (images / "aaa_broken.png").write_text("this is not a PNG")
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(images),
            "--output-dir",
            str(out),
            "--model",
            str(smoke_model),
            "--config",
            str(SMOKE_NETWORK),
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "aaa_broken.png" in err and "segmented 2 of 3" in err
    assert not (out / "aaa_broken.png").exists()
    for f in good:
        mask = np.asarray(Image.open(out / (f.stem + ".png")))
        assert mask.shape == (640, 640) and set(np.unique(mask)) <= {0, 255}


def test_segment_medical_volume_keeps_geometry(smoke_model, tmp_path):
    itk = pytest.importorskip("itk")
    slices = [np.asarray(Image.open(f).convert("L"), dtype=np.float32) for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:3]]
    volume = itk.image_from_array(np.stack(slices))
    volume.SetSpacing([0.7, 0.7, 3.0])
    volume.SetOrigin([-10.0, 5.0, 20.0])
    src = tmp_path / "input" / "case1.nii.gz"
    src.parent.mkdir()
    itk.imwrite(volume, str(src))
    out = tmp_path / "out"
    assert (
        main(
            ["segment", str(src), "--output-dir", str(out), "--model", str(smoke_model), "--config", str(SMOKE_NETWORK)]
        )
        == 0
    )
    mask = itk.imread(str(out / "case1.nii.gz"))
    assert itk.array_from_image(mask).shape == (3, 640, 640)
    assert np.allclose(mask.GetSpacing(), [0.7, 0.7, 3.0]) and np.allclose(mask.GetOrigin(), [-10.0, 5.0, 20.0])


def test_segment_refuses_output_inside_input_folder(tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(SAMPLE_SPLIT, images)
    assert main(["segment", str(images), "--output-dir", str(images / "masks")]) == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert not (images / "masks").exists()


def test_help_and_check_data_import_neither_torch_nor_monai():
    """Start-up stays light (importing MONAI takes seconds): only commands that run a model load it."""
    code = (
        "import sys\n"
        "from brainseg_monai.cli import main\n"
        "for argv in (['--help'], ['check-data', '--help'], ['check-data', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'monai', 'ignite') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(SAMPLE_SPLIT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "OK (0 warning(s))" in proc.stdout


def test_segment_overlays_for_a_volume_show_the_slices_with_a_tumor(tmp_path):
    """--overlays on a NIfTI volume: one picture per slice with a tumor (shipped model), the middle one if none."""
    itk = pytest.importorskip("itk")
    assert (BUNDLE / "models" / "model.pt").is_file(), "the bundle ships its weights in git"
    tumor = np.asarray(Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]).convert("L"), dtype=np.float32)
    volume = np.stack([np.zeros_like(tumor), tumor, np.zeros_like(tumor)])  # a tumor slice between two blank ones
    src = tmp_path / "input" / "case2.nii.gz"
    src.parent.mkdir()
    itk.imwrite(itk.image_from_array(volume), str(src))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--output-dir", str(out), "--overlays", "--device", "cpu"]) == 0
    mask = itk.array_from_image(itk.imread(str(out / "case2.nii.gz")))
    with_tumor = [k for k in range(3) if mask[k].any()]
    expected = [f"case2_slice{k:03d}.png" for k in (with_tumor or [1])]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == expected
    with Image.open(out / "overlays" / expected[0]) as im:
        assert im.size == (tumor.shape[1], tumor.shape[0])


def test_segment_cuts_a_sagittal_volume_into_its_axial_slices_and_shows_them(tmp_path):
    """A head stored sagittally (K right to left, J foot to head, I front to back) gets the axial original's
    result: the same label map in its own voxel layout, the same per-slice rows, axial overlays."""
    itk = pytest.importorskip("itk")
    tumor = np.asarray(Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]).convert("L"), dtype=np.float32)
    axial = np.stack([np.zeros_like(tumor), tumor, np.zeros_like(tumor)])  # (k, j, i)
    sagittal = itk.image_from_array(np.ascontiguousarray(np.transpose(axial, (2, 0, 1))))
    sagittal.SetDirection(itk.matrix_from_array(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    (tmp_path / "input").mkdir()
    itk.imwrite(itk.image_from_array(axial), str(tmp_path / "input" / "axial.nii.gz"))
    itk.imwrite(sagittal, str(tmp_path / "input" / "sagittal.nii.gz"))
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "input"), "--output-dir", str(out), "--overlays", "--device", "cpu"]) == 0
    expected = itk.array_from_image(itk.imread(str(out / "axial.nii.gz")))
    labels = itk.array_from_image(itk.imread(str(out / "sagittal.nii.gz")))
    assert labels.shape == (tumor.shape[1], 3, tumor.shape[0]) and np.array_equal(
        labels, np.transpose(expected, (2, 0, 1))
    )
    with open(out / "axial_slices.csv") as a, open(out / "sagittal_slices.csv") as s:
        assert list(csv.DictReader(a)) == list(csv.DictReader(s)) and expected[1].any()
    pictures = sorted(p.name for p in (out / "overlays").iterdir())
    assert pictures == ["axial_slice001.png", "sagittal_slice001.png"]
    with (
        Image.open(out / "overlays" / "axial_slice001.png") as a,
        Image.open(out / "overlays" / "sagittal_slice001.png") as s,
    ):
        assert a.size == s.size == (tumor.shape[1], tumor.shape[0]), "the sagittal volume's overlay is an axial slice"
        same = (np.asarray(a) == np.asarray(s)).all(axis=-1).mean()
        assert same > 0.95, f"only {same:.1%} of the pixels agree (the captions name the files)"


def test_segment_finds_no_tumor_on_a_nearly_blank_slice(tmp_path, capsys):
    """A black slice with two bright specks (0.2% of its pixels; the top of a volume, or a bad export): its 0.5
    and 99.5 percentiles are both black. Scaled by its own range it is a black slice with two white specks
    (the shipped model finds nothing); shifted as MONAI shifts it, the network saw raw 8-bit values and
    called most of the frame a tumor with a score of 1.0."""
    image = np.zeros((256, 256), np.uint8)
    image[100:110, 120:130] = 255
    image[50:60, 60:66] = 180
    (tmp_path / "input").mkdir()
    Image.fromarray(image).save(tmp_path / "input" / "specks.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "input"), "--output-dir", str(out), "--device", "cpu"]) == 0
    with open(out / "tumor_report.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["verdict"] == "no tumor found" and float(row["tumor_score"]) < 0.3
    assert "Divide by zero" not in capsys.readouterr().err


def test_segment_gives_the_axial_slices_of_thick_coronal_slices_square_pixels(tmp_path, capsys):
    """A head acquired in coronal slices 4 mm apart, 1 mm in their plane (every fourth row of a sample
    slice, front to back): its axial slice is squeezed four times. With its spacing read, the shipped model
    segments it as the axial original; squeezed as it lies (its spacing written as 1 mm), it finds nothing."""
    itk = pytest.importorskip("itk")
    tumor = np.asarray(Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]).convert("L"), dtype=np.float32)
    axial = np.stack([np.zeros_like(tumor), tumor, np.zeros_like(tumor)])  # (k, j, i)
    (tmp_path / "input").mkdir()
    itk.imwrite(itk.image_from_array(axial), str(tmp_path / "input" / "axial.nii.gz"))
    for name, spacing in (("coronal", 4.0), ("squeezed", 1.0)):
        coronal = itk.image_from_array(np.ascontiguousarray(np.transpose(axial[:, 1::4], (1, 0, 2))))  # K front to back
        coronal.SetDirection(itk.matrix_from_array(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
        coronal.SetSpacing([1.0, 1.0, spacing])
        itk.imwrite(coronal, str(tmp_path / "input" / f"{name}.nii.gz"))
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "input"), "--output-dir", str(out), "--overlays", "--device", "cpu"]) == 0
    with open(out / "tumor_report.csv") as f:
        rows = {r["file_name"]: r for r in csv.DictReader(f)}
    counts = ("verdict", "slices_with_tumor", "slices_with_possible_tumor")
    assert [rows["coronal.nii.gz"][k] for k in counts] == [rows["axial.nii.gz"][k] for k in counts]
    assert rows["axial.nii.gz"]["verdict"] != "no tumor found" == rows["squeezed.nii.gz"]["verdict"]
    said = capsys.readouterr().err  # each volume's line says how it was cut, where not as it lies
    assert "coronal.nii.gz: " in said and "; axial slices along J, 4 x 1 mm pixels made square)" in said
    axial = [line for line in said.splitlines() if "axial.nii.gz: " in line]
    assert len(axial) == 1 and axial[0].endswith(f"(tumor score {float(rows['axial.nii.gz']['tumor_score']):.2f})")
    assert abs(float(rows["coronal.nii.gz"]["tumor_score"]) - float(rows["axial.nii.gz"]["tumor_score"])) < 0.05
    labels = itk.array_from_image(itk.imread(str(out / "coronal.nii.gz")))
    assert labels.shape == (tumor.shape[0] // 4, 3, tumor.shape[1]) and labels[:, 1].any() and not labels[:, 0].any()
    with Image.open(out / "overlays" / "coronal_slice001.png") as im:
        assert im.size == (tumor.shape[1], tumor.shape[0]), "the overlay shows the slice with square pixels"


def test_segment_refuses_a_named_folder_that_holds_no_images(tmp_path, capsys):
    """A folder given beside other inputs that yields nothing (a DICOM export without suffixes) is said, not dropped:
    the run stops before any work."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "IM0001").write_bytes(b"\0" * 132 + b"DICM")
    image = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    out = tmp_path / "out"
    assert main(["segment", str(export), str(image), "--output-dir", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"{export}: no images in this folder" in err and "DICOM files need their .dcm suffix" in err
    assert not out.exists()


def test_evaluate_lists_only_the_files_it_wrote_and_names_an_earlier_run_s(tmp_path):
    """An evaluation without --overlays into a folder where an earlier one drew overlays: its last line lists the
    files it wrote, and says that overlays/ (and training curves) there are the earlier evaluation's."""
    import argparse

    from brainseg_monai.cli import _evaluation_summary

    out = tmp_path / "ev"
    (out / "overlays").mkdir(parents=True)
    (out / "training_curves.png").write_bytes(b"")
    summary = {"n_images": 2, "n_images_tumor_found": 1}
    quiet = argparse.Namespace(outlines=None, overlays=False, train_log=None)
    lines = _evaluation_summary(summary, out, quiet)
    assert lines[-2] == f"files in {out}: metrics_per_image.csv, metrics_summary.json, masks/"
    assert lines[-1] == f"from an earlier evaluation, not this one: training_curves.png, overlays/ in {out}"
    drawn = argparse.Namespace(outlines=None, overlays=True, train_log="logs")
    lines = _evaluation_summary(summary, out, drawn)
    assert (
        lines[-1]
        == f"files in {out}: metrics_per_image.csv, metrics_summary.json, masks/, training_curves.png, overlays/"
    )
