"""Messages a person can act on: files that cannot be read say what they are and what to do, unusual inputs
are named by every front end, and a bundle run says its summary once.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg_monai.cli import main
from conftest import SAMPLE_SPLIT, SMOKE_NETWORK, run_bundle
from scripts.io import DICOM_MODALITY_TAG, read_medical_image
from scripts.tumor_report import TUMOR_REPORT_FILE, UNUSUAL_INPUT_WARNING, tumor_count_summary
from scripts.verdict import POSSIBLE_TUMOR, TUMOR

itk = pytest.importorskip("itk")
nib = pytest.importorskip("nibabel")

SUMMARY = re.compile(r"(tumor found on (\d+)|no tumor found on any) of (\d+) (images|volumes|inputs)\b")


def _grey(index: int = 0, size: int = 64) -> np.ndarray:
    path = sorted(SAMPLE_SPLIT.glob("*.jpg"))[index]
    return np.asarray(Image.open(path).convert("L").resize((size, size)), np.float32)


def _unreadable_files(folder: Path) -> dict[str, Path]:
    """A NIfTI-2 file, a real MR DICOM cut in half, and a 4D NIfTI (x, y, z, t = 20 x 24 x 5 x 3)."""
    folder.mkdir()
    affine = np.eye(4)
    nifti2 = folder / "scan_nifti2.nii.gz"
    nib.save(nib.Nifti2Image(np.random.default_rng(0).random((20, 24, 5), np.float32), affine), str(nifti2))
    dicom = folder / "slice.dcm"
    image = itk.image_from_array(np.random.default_rng(1).integers(1, 100, (32, 32)).astype(np.int16))
    image.GetMetaDataDictionary()[DICOM_MODALITY_TAG] = "MR"
    itk.imwrite(image, str(dicom), imageio=itk.GDCMImageIO.New())
    read_medical_image(dicom)  # whole, it reads
    dicom.write_bytes(dicom.read_bytes()[: dicom.stat().st_size // 2])
    series = folder / "fmri_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((20, 24, 5, 3), np.float32), affine), str(series))
    return {"nifti2": nifti2, "dicom": dicom, "4d": series}


# -- files that cannot be read -------------------------------------------------------------


def test_unreadable_files_say_what_they_are_and_what_to_do(tmp_path):
    files = _unreadable_files(tmp_path / "in")
    expected = {
        "nifti2": "NIfTI-2 is not supported: save it as NIfTI-1 (e.g. nibabel: nib.save(nib.Nifti1Image.from_image(",
        "dicom": "not a readable DICOM file (truncated or damaged)",
        "4d": "a 4D image (x, y, z, t = 20 x 24 x 5 x 3: 3 volumes)",
    }
    for kind, path in files.items():
        with pytest.raises(ValueError) as caught:
            read_medical_image(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and expected[kind] in message, message
        assert "No ImageIO" not in message
    with pytest.raises(ValueError, match="pick one volume, e.g. the first time point"):
        read_medical_image(files["4d"])


def test_segment_names_each_unreadable_file_on_one_line(smoke_model, tmp_path, capsys):
    files = _unreadable_files(tmp_path / "in")
    args = ["segment", *map(str, files.values()), "--output-dir", str(tmp_path / "out"), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED ")]
    assert failed == [
        f"FAILED {files['nifti2']}: NIfTI-2 is not supported: save it as NIfTI-1 (e.g. nibabel: "
        "nib.save(nib.Nifti1Image.from_image(nib.load(path)), 'image.nii.gz'))",
        f"FAILED {files['dicom']}: not a readable DICOM file (truncated or damaged): copy or export it again "
        "from its source",
        f"FAILED {files['4d']}: a 4D image (x, y, z, t = 20 x 24 x 5 x 3: 3 volumes): only a 2D or 3D image can "
        "be segmented; pick one volume, e.g. the first time point, into a file of its own (for NIfTI with "
        "nibabel: nib.save(nib.load(path).slicer[..., 0], 'first.nii.gz'))",
    ]


# -- unusual inputs --------------------------------------------------------------------------


def test_evaluate_names_each_unusual_image(smoke_model, sample_split, tmp_path, capsys):
    inverted = sorted(sample_split.glob("*.jpg"))[:2]
    for path in inverted:  # a negative of a T1 slice: the input check's clearest case
        Image.fromarray(255 - np.asarray(Image.open(path).convert("L"))).save(path, format="JPEG")
    args = ["evaluate", str(sample_split), "--output-dir", str(tmp_path / "ev"), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    with open(tmp_path / "ev" / "metrics_per_image.csv", newline="", encoding="utf-8") as f:
        flagged = sorted(row["file_name"] for row in csv.DictReader(f) if row["input_unusual"] == "True")
    assert flagged == sorted(p.name for p in inverted)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING ")]
    assert warnings == [f"WARNING {name} {UNUSUAL_INPUT_WARNING}" for name in flagged]


def test_many_unusual_images_are_counted_and_the_first_named(capsys):
    from brainseg_monai.cli import MAX_LISTED_UNUSUAL, _warn_unusual

    rows = [{"file_name": f"img{k:02d}.jpg", "input_unusual": k % 2 == 0} for k in range(20)]
    _warn_unusual(rows, Path("out/metrics_per_image.csv"))
    lines = capsys.readouterr().err.splitlines()
    names = ", ".join(f"img{k:02d}.jpg" for k in range(0, 2 * MAX_LISTED_UNUSUAL, 2))
    assert lines == [
        "WARNING 10 images look unlike the T1 contrast MRI slices the model was trained on, their results may mean "
        f"nothing: {names} and {10 - MAX_LISTED_UNUSUAL} more (input_unusual in out/metrics_per_image.csv)"
    ]


def test_segment_flags_unusual_images_and_volumes_in_the_report(smoke_model, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    grey = _grey(size=256)
    Image.fromarray(grey.astype(np.uint8)).save(inputs / "plain.png")
    Image.fromarray((255 - grey).astype(np.uint8)).save(inputs / "negative.png")
    itk.imwrite(itk.image_from_array(np.stack([255 - grey] * 3)), str(inputs / "negative_volume.nii.gz"))
    itk.imwrite(itk.image_from_array(np.stack([grey] * 3)), str(inputs / "plain_volume.nii.gz"))
    args = ["segment", str(inputs), "--output-dir", str(tmp_path / "out"), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    with open(tmp_path / "out" / TUMOR_REPORT_FILE, newline="", encoding="utf-8") as f:
        rows = {row["file_name"]: row for row in csv.DictReader(f)}
    assert {name: row["input_unusual"] for name, row in rows.items()} == {
        "plain.png": "False",
        "negative.png": "True",
        "plain_volume.nii.gz": "False",
        "negative_volume.nii.gz": "True",
    }  # a bool for a volume too, its slices counted apart
    assert rows["negative_volume.nii.gz"]["unusual_slices"] == "3" and rows["plain_volume.nii.gz"]["unusual_slices"]
    assert rows["negative.png"]["unusual_slices"] == ""
    err = capsys.readouterr().err.splitlines()
    for name in ("negative.png", "negative_volume.nii.gz"):
        assert f"WARNING {inputs / name} {UNUSUAL_INPUT_WARNING}" in err
    assert sum(line.startswith("WARNING ") for line in err) == 2


# -- one summary per bundle run ----------------------------------------------------------------


def test_bundle_inference_logs_one_summary_over_images_and_volumes(smoke_model, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    for path in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]:
        shutil.copy(path, data)
    itk.imwrite(itk.image_from_array(np.stack([_grey(2), _grey(3), _grey(4)])), str(data / "case.nii.gz"))
    out = tmp_path / "out"
    proc = run_bundle(
        "--config_file", f"['configs/inference.json','{SMOKE_NETWORK}']", "--ckpt_path", str(smoke_model),
        "--dataset_dir", str(data), "--output_dir", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [line for line in (proc.stdout + proc.stderr).splitlines() if SUMMARY.search(line)]
    assert len(summaries) == 1, summaries
    with open(out / TUMOR_REPORT_FILE, newline="", encoding="utf-8") as f:
        verdicts = [row["verdict"] for row in csv.DictReader(f)]
    assert len(verdicts) == 3
    said = tumor_count_summary(verdicts.count(TUMOR), 3, "inputs (2 images, 1 volume)", verdicts.count(POSSIBLE_TUMOR))
    assert summaries[0].endswith(f"{said}; report: {out / TUMOR_REPORT_FILE}")


def test_segment_prints_a_name_with_a_newline_quoted_on_one_line(smoke_model, tmp_path, capsys):
    """stdout holds one mask path per line for a caller to read: a newline in a file name (legal on Linux) is
    quoted, as in the error lines, never printed raw across two lines."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(_grey(size=256).astype(np.uint8)).save(inputs / "case\nslice.png")
    out = tmp_path / "out"
    args = ["segment", str(inputs), "--output-dir", str(out), "--model", str(smoke_model)]
    assert main([*args, "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [repr(str(out / "case\nslice.png"))]
    assert (out / "case\nslice.png").is_file()
    verdicts = [line for line in captured.err.splitlines() if "tumor score" in line]
    assert len(verdicts) == 1 and verdicts[0].startswith(repr(str(inputs / "case\nslice.png")) + ": ")
