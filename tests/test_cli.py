"""The ``brainseg`` command: exit codes, one-line errors, and the files it writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from brainseg_monai.cli import main
from conftest import BUNDLE, CONFIGS, SAMPLE_ROOT, SAMPLE_SPLIT, SMOKE_NETWORK


def _brainseg(*args: str):
    """The installed console script in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "brainseg_monai.cli", *args], capture_output=True, text=True, timeout=600
    )


# -- check-data --------------------------------------------------------------------------


def test_check_data_accepts_the_sample_split(capsys):
    assert main(["check-data", str(SAMPLE_SPLIT)]) == 0
    assert "OK" in capsys.readouterr().out


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
    code = main(
        [
            "train",
            "--dataset-dir",
            str(SAMPLE_ROOT),
            "--train-split",
            "valid",
            "--val-split",
            "valid",
            "--config",
            str(SMOKE_NETWORK),
            "--config",
            str(CONFIGS / "smoke_cpu.json"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--output-dir",
            str(out),
        ]
    )
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
