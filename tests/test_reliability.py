"""Reliability: bad input at every entry point, atomic writes, resume and determinism, long runs.

Bad input is met with one line naming the file, id or field and what is wrong, a non-zero
exit status, no traceback, and nothing written for the bad item; unusual but valid images
(16-bit, alpha, palette, non-square, 4000x3000, 1x1) are segmented. Cases already covered by
test_cli.py, test_coco.py and test_bundle.py are not repeated here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLE, CONFIGS, SAMPLE_SPLIT, SMOKE_NETWORK

import PIL
from PIL import Image

from brainseg_monai.cli import main

REPO = BUNDLE.parent
ANNOTATIONS = "_annotations.coco.json"
SMOKE_TRAIN = f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']"


# --------------------------------------------------------------------------- helpers


def _bundle(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ...`` from the bundle folder, one thread."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=BUNDLE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "brainseg ")) and "error:" in line]


def _read_json(split: Path) -> dict:
    return json.loads((split / ANNOTATIONS).read_text())


def _write_json(split: Path, data: dict) -> None:
    (split / ANNOTATIONS).write_text(json.dumps(data))


def _grey() -> np.ndarray:
    with Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]) as im:
        return np.asarray(im.convert("L"))


def _tiff_stack(path: Path) -> None:
    g = _grey()
    Image.fromarray(g).save(path, save_all=True, append_images=[Image.fromarray(255 - g)])


def _palette_png(path: Path, grey: np.ndarray) -> None:
    """A palette PNG that *shows* ``grey`` through a shuffled palette: its indices are not intensities."""
    perm = np.random.default_rng(0).permutation(256).astype(np.uint8)
    im = Image.fromarray(np.argsort(perm).astype(np.uint8)[grey], "P")
    im.putpalette(np.repeat(perm, 3).tolist())
    im.save(path)


def _segment_args(smoke_model: Path, out: Path, *inputs) -> list[str]:
    return [
        "segment",
        *map(str, inputs),
        "--output-dir",
        str(out),
        "--model",
        str(smoke_model),
        "--config",
        str(SMOKE_NETWORK),
        "--device",
        "cpu",
    ]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".")]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset root with train/ and valid/ copies of the sample split."""
    root = tmp_path / "dataset"
    shutil.copytree(SAMPLE_SPLIT, root / "train")
    shutil.copytree(SAMPLE_SPLIT, root / "valid")
    return root


# --------------------------------------------------------------------------- bad COCO files


def test_check_data_images_as_an_object_is_one_line(sample_split, capsys):
    data = _read_json(sample_split)
    data["images"] = {str(im["id"]): im for im in data["images"]}
    _write_json(sample_split, data)
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {sample_split / ANNOTATIONS}: images: must be a list, not dict"
    assert len(err) == 2 and "Traceback" not in "".join(err)


def test_check_data_bbox_as_a_string(sample_split, capsys):
    data = _read_json(sample_split)
    data["annotations"][0]["bbox"] = "[251, 323, 96.25, 67.5]"
    _write_json(sample_split, data)
    assert main(["check-data", str(sample_split)]) == 1
    line, summary = capsys.readouterr().err.splitlines()
    assert f"{sample_split / ANNOTATIONS}: annotations[id=56].bbox: must be [x, y, width, height]" in line
    assert summary.endswith("1 error(s), 0 warning(s)")


def test_train_refuses_nan_polygon_coordinates_before_starting(dataset, tmp_path, capsys):
    data = _read_json(dataset / "train")
    data["annotations"][0]["segmentation"][0][3] = float("nan")
    _write_json(dataset / "train", data)  # json writes NaN, which json.load reads back
    out = tmp_path / "run"
    assert main(["train", "--dataset-dir", str(dataset), "--output-dir", str(out), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "annotations[id=56].segmentation: polygon must be a list of finite numbers" in err
    assert "training not started" in err and not out.exists()


def test_bundle_train_with_string_coordinates_fails_in_one_line(dataset, tmp_path):
    data = _read_json(dataset / "valid")
    data["annotations"][1]["bbox"][1] = "323"
    _write_json(dataset / "valid", data)
    proc = _bundle(
        "--config_file",
        SMOKE_TRAIN,
        "--dataset_dir",
        str(dataset),
        "--train_split",
        "train",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert line.startswith(f"error: {dataset / 'valid' / ANNOTATIONS}: annotations[id=57].bbox: must be [x, y")
    assert not list(tmp_path.glob("models/*.pt"))


def test_check_data_huge_json_reports_every_problem(tmp_path, capsys):
    split = tmp_path / "huge"
    split.mkdir()
    n = 50_000
    _write_json(
        split,
        {
            "images": [{"id": i, "file_name": f"img_{i}.jpg", "height": 640, "width": 640} for i in range(n)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40]} for i in range(n)],
            "categories": [{"id": 1, "name": "Tumor"}],
        },
    )
    assert main(["check-data", str(split)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].endswith(f"{n} error(s), 0 warning(s)") and len(err) == n + 1
    assert err[0].endswith("images[id=0].file_name: img_0.jpg: image file is missing")


def test_check_data_many_entries_sharing_one_file_decode_it_once_and_are_errors(tmp_path, capsys, monkeypatch):
    split = tmp_path / "shared"
    split.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], split / "a.jpg")
    n = 50_000
    _write_json(
        split,
        {
            "images": [{"id": i, "file_name": "a.jpg", "height": 640, "width": 640} for i in range(n)],
            "annotations": [],
            "categories": [{"id": 1, "name": "Tumor"}],
        },
    )
    import scripts.coco as coco

    calls = []
    original = coco._check_image_file
    monkeypatch.setattr(coco, "_check_image_file", lambda p: calls.append(p) or original(p))
    # records sharing a file would be scored against each other's annotations: each is an error, named
    assert main(["check-data", str(split)]) == 1
    assert len(calls) == 1  # decoding it for every entry took minutes
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(
        "images[id=1].file_name: 'a.jpg' is also the file of images[id=0]: two images with one file (images 0 and 1); "
        "give each its own file, or merge the two records into one"
    )
    assert f"{n - 1} error(s)" in err[-1]


def test_check_data_deeply_nested_json(sample_split, capsys):
    (sample_split / ANNOTATIONS).write_text("[" * 200_000 + "]" * 200_000)
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {sample_split / ANNOTATIONS}: JSON nested too deeply to be COCO data"


def test_check_data_refuses_a_tiff_stack_where_a_2d_image_is_expected(sample_split, capsys):
    data = _read_json(sample_split)
    _tiff_stack(sample_split / "stack.tif")
    data["images"][0]["file_name"] = "stack.tif"
    _write_json(sample_split, data)
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err
    assert "images[id=56].file_name: stack.tif: image file has 2 frames (a 3D stack); a 2D image is expected" in err


def test_evaluate_refuses_a_bad_split_before_writing_anything(sample_split, tmp_path, capsys):
    data = _read_json(sample_split)
    data["annotations"][0]["image_id"] = "56"
    data["annotations"][1]["bbox"] = None
    _write_json(sample_split, data)
    out = tmp_path / "eval"
    assert main(["evaluate", str(sample_split), "--output-dir", str(out), "--model", str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err
    assert "annotations[id=56].image_id: no image with id '56'" in err
    assert "annotations[id=57].bbox" in err and "nothing evaluated" in err
    assert not out.exists()


def test_evaluate_missing_split_folder(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "nope"), "--output-dir", str(out)]) == 1
    assert f"error: {tmp_path / 'nope'}: split folder not found" in capsys.readouterr().err
    assert not out.exists()


def test_train_missing_dataset_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset-dir", str(tmp_path / "nope"), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope' / 'train'}: split folder not found" in err and "training not started" in err
    assert not out.exists()


def test_train_bad_category_map_and_missing_config(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset-dir", str(dataset), "--output-dir", str(out), "--category-map", "[1]"]) == 1
    assert "--category-map: must be a JSON object" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--dataset-dir",
                str(dataset),
                "--output-dir",
                str(out),
                "--config",
                str(tmp_path / "missing.json"),
            ]
        )
        == 1
    )
    assert f"--config {tmp_path / 'missing.json'}: file not found" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- bad arguments


def test_evaluate_refuses_output_inside_the_split_folder(sample_split, capsys):
    assert main(["evaluate", str(sample_split), "--output-dir", str(sample_split / "eval")]) == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert not (sample_split / "eval").exists()


def test_segment_refuses_output_in_the_folder_of_a_file_input(tmp_path, capsys):
    image = tmp_path / "scan.png"
    Image.fromarray(_grey()).save(image)
    assert main(["segment", str(image), "--output-dir", str(tmp_path)]) == 1  # the mask would be scan.png itself
    assert "holds the input" in capsys.readouterr().err


def test_segment_output_folder_under_a_regular_file(tmp_path, capsys):
    """A path under a FILE cannot be created by anyone, root included (ENOTDIR)."""
    (tmp_path / "afile").write_text("x")
    assert main(["segment", str(SAMPLE_SPLIT), "--output-dir", str(tmp_path / "afile" / "masks")]) == 1
    line = capsys.readouterr().err.strip()
    assert (
        line == f"brainseg segment: error: --output-dir {tmp_path / 'afile' / 'masks'}: cannot create (Not a directory)"
    )


@pytest.fixture
def unwritable_dir(tmp_path: Path):
    """A folder nobody can create files in. chmod 555 does not stop root (these tests run as root in
    CI), so as root the folder is made immutable with ``chattr +i``, which binds root too."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root on a filesystem without chattr +i: no way to make a folder unwritable")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_segment_output_folder_not_writable(unwritable_dir, capsys):
    assert main(["segment", str(SAMPLE_SPLIT), "--output-dir", str(unwritable_dir)]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"brainseg segment: error: --output-dir {unwritable_dir}: not writable (")
    assert list(unwritable_dir.iterdir()) == []


def test_segment_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["segment", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")]) == 1
    assert f"no images found in {tmp_path / 'empty'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad and unusual images


def test_segment_refuses_each_bad_image_in_one_line_and_writes_nothing_for_it(smoke_model, tmp_path, capsys):
    itk = pytest.importorskip("itk")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], images / "good.jpg")
    Image.fromarray(_grey()).save(images / "png_source.png")
    raw = (images / "png_source.png").read_bytes()
    (images / "png_source.png").unlink()
    (images / "corrupt.png").write_bytes(raw[:16] + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    (images / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (images / "empty.png").write_bytes(b"")
    volume = np.stack([_grey(), _grey()]).astype(np.float32)
    volume[1, 100, 100] = np.nan
    itk.imwrite(itk.image_from_array(volume), str(images / "nan.nii.gz"))
    _tiff_stack(images / "stack.tif")
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 1
    captured = capsys.readouterr()
    failed = {
        line.split(":")[0].removeprefix("FAILED "): line
        for line in captured.err.splitlines()
        if line.startswith("FAILED ")
    }
    expected = {
        "corrupt.png": "not an image file PIL can read",
        "truncated.png": "image file is unreadable or truncated",
        "empty.png": "image file is empty (0 bytes)",
        "nan.nii.gz": "image contains 1 NaN or infinite value(s)",
        "stack.tif": "has 2 frames (a 3D stack); a 2D image is expected",
    }
    assert {Path(k).name for k in failed} == set(expected)
    for path, line in failed.items():
        assert line == f"FAILED {path}: {expected[Path(path).name]}" or expected[Path(path).name] in line
        assert line.count(str(path)) == 1  # named once, on one line
    assert "segmented 1 of 6 image(s)" in captured.err
    # nothing for the bad ones, no temp files; the tumor report lists the one segmented image
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "tumor_report.csv"]
    assert captured.out.splitlines() == [str(out / "good.png")]


def test_unusual_but_valid_images_are_segmented_like_their_plain_grey_version(smoke_model, tmp_path, capsys):
    from scripts.predictor import BundlePredictor

    grey = _grey()
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(grey).save(images / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(images / "sixteen_bit.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 90)]), "RGBA").save(images / "rgba.png")
    Image.fromarray(grey).convert("LA").save(images / "grey_alpha.png")
    _palette_png(images / "palette.png", grey)
    Image.fromarray(grey).convert("CMYK").save(images / "cmyk.tif")  # print-style files: C = 255 - R, ...
    pillow_reads_ycbcr_tiff = int(PIL.__version__.split(".")[0]) >= 13  # Pillow 12 (Python 3.10) cannot read its own
    if pillow_reads_ycbcr_tiff:
        Image.fromarray(grey).convert("RGB").convert("YCbCr").save(images / "ycbcr.tif")
    predictor = BundlePredictor(ckpt_path=smoke_model, device="cpu", config_files=[SMOKE_NETWORK])
    _, reference = predictor.predict_file(images / "grey.png", with_probability=True)
    modes = {
        "sixteen_bit.png": {"I;16"},
        "rgba.png": {"RGBA"},
        "grey_alpha.png": {"LA"},
        "palette.png": {"P"},
        "cmyk.tif": {"CMYK"},
        "ycbcr.tif": {"YCbCr"},
    }
    if not pillow_reads_ycbcr_tiff:
        del modes["ycbcr.tif"]
    for name, mode in modes.items():
        assert Image.open(images / name).mode in mode, name
        _, prob = predictor.predict_file(images / name, with_probability=True)
        # YCbCr -> RGB rounds some grey levels by one
        np.testing.assert_allclose(prob, reference, atol=2e-3 if name == "ycbcr.tif" else 1e-4, err_msg=name)

    # sizes: the mask comes back at the input's size, whatever it is
    Image.fromarray(grey[40:400, 10:630]).save(images / "non_square.png")
    Image.fromarray(grey).resize((4000, 3000)).save(images / "large_4000x3000.png")
    Image.fromarray(np.array([[77]], np.uint8)).save(images / "one_pixel.png")
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 0
    captured = capsys.readouterr()
    n = len(list(images.iterdir()))
    assert n == 9 + pillow_reads_ycbcr_tiff
    assert "FAILED" not in captured.err and f"segmented {n} of {n} image(s)" in captured.err
    for src in images.iterdir():
        with Image.open(src) as im, Image.open(out / f"{src.stem}.png") as mask:
            assert mask.size == im.size and mask.mode == "L", src.name
            assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_bundle_inference_segments_unusual_images_and_refuses_a_folder_with_a_corrupt_one(smoke_model, tmp_path):
    """``monai.bundle run`` inference reads images like the CLI (same reader): the unusual ones are segmented,
    each mask at its image's size. A corrupt image added to the folder refuses the next run before it writes
    anything, with one line naming it: the masks and report of the first run stay as they were."""
    grey = _grey()
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(grey.astype(np.uint16) * 257).save(images / "a_sixteen_bit.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 90)]), "RGBA").save(images / "b_rgba.png")
    Image.fromarray(np.array([[77]], np.uint8)).save(images / "c_one_pixel.png")
    Image.fromarray(grey[40:400, 10:630]).save(images / "d_non_square.png")
    out = tmp_path / "masks"
    args = (
        "--config_file",
        f"['configs/inference.json','{SMOKE_NETWORK}']",
        "--dataset_dir",
        str(images),
        "--ckpt_path",
        str(smoke_model),
        "--output_dir",
        str(out),
    )
    proc = _bundle(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    masks = ["a_sixteen_bit.png", "b_rgba.png", "c_one_pixel.png", "d_non_square.png"]
    assert sorted(p.name for p in out.iterdir()) == [*masks, "tumor_report.csv"]
    for name in masks:
        with Image.open(images / name) as im, Image.open(out / name) as m:
            assert m.size == im.size
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    (images / "z_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)
    proc = _bundle(*args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert line == (
        f"error: {images / 'z_corrupt.png'}: image file is unreadable or truncated (Truncated File Read); "
        "nothing was segmented"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written


def test_bundle_error_hook_prints_the_innermost_cause_and_debug_restores_tracebacks():
    from scripts.errors import error_lines, one_line_errors

    saved = sys.excepthook
    try:
        one_line_errors(debug=False)
        assert sys.excepthook is not sys.__excepthook__
        one_line_errors(debug=True)
        assert sys.excepthook is sys.__excepthook__
    finally:
        sys.excepthook = saved
    try:
        try:
            raise ValueError("/data/x.png: image file is empty (0 bytes)")
        except ValueError as inner:
            raise RuntimeError("applying transform <LoadImaged>") from inner
    except RuntimeError as outer:
        assert error_lines(outer) == ["/data/x.png: image file is empty (0 bytes)"]


# --------------------------------------------------------------------------- atomic writes


def _half_then(exc: BaseException):
    """A PIL ``save`` that writes half a file, then fails the way a crash or a full disk does."""

    def save(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
        raise exc

    return save


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_crash_while_writing_a_mask_leaves_no_partial_file(tmp_path, monkeypatch, existing):
    from scripts.io import write_mask

    target = tmp_path / "m.png"
    if existing:
        write_mask(np.ones((8, 8), np.uint8), target)
    before = target.read_bytes() if existing else None
    monkeypatch.setattr(Image.Image, "save", _half_then(RuntimeError("killed mid-write")))
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_mask(np.zeros((8, 8), np.uint8), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.png"] if existing else [])
    if existing:
        assert target.read_bytes() == before  # the old mask, whole


def test_crash_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from scripts.handlers import TrainingStateSaver

    net = torch.nn.Linear(3, 2)
    saver = TrainingStateSaver(tmp_path, {"model": net})
    engine = type("E", (), {})()
    saver.save_dict["trainer"] = {"epoch": 1}
    saver(engine)
    before = (tmp_path / "checkpoint_latest.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(40)  # half-written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with torch.no_grad():
        net.weight.add_(1)
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'checkpoint_latest.pt'}: No space left")):
        saver(engine)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pt"]
    assert (tmp_path / "checkpoint_latest.pt").read_bytes() == before


def test_crash_while_writing_metrics_reports_keeps_the_previous_ones(tmp_path, monkeypatch):
    """evaluate.json's metrics reports: whole files from the last run survive a crash mid-write."""
    import monai.handlers.metrics_saver as metrics_saver
    from ignite.engine import Engine, Events

    from scripts.handlers import AtomicMetricsSaver

    def evaluate(dice: float) -> None:
        engine = Engine(lambda e, b: None)
        saver = AtomicMetricsSaver(
            str(tmp_path), metrics="*", metric_details="*", batch_transform=lambda b: b, summary_ops="*"
        )
        saver.attach(engine)

        @engine.on(Events.ITERATION_COMPLETED)  # before the saver runs at EPOCH_COMPLETED
        def _metrics(e):
            e.state.metrics = {"val_mean_dice": dice}
            e.state.metric_details = {"val_mean_dice": torch.tensor([[dice]])}

        engine.run([[{"filename_or_obj": "a.png"}]], max_epochs=1)

    evaluate(0.5)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(written) == {"metrics.csv", "val_mean_dice_raw.csv", "val_mean_dice_summary.csv"}
    assert written["metrics.csv"] == b"val_mean_dice,0.5\n"
    real_write = metrics_saver.write_metrics_reports

    def dying_write(save_dir, **kwargs):
        real_write(save_dir=save_dir, **kwargs)
        with open(os.path.join(save_dir, "val_mean_dice_raw.csv"), "r+b") as f:
            f.truncate(3)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics_saver, "write_metrics_reports", dying_write)
    with pytest.raises(OSError, match="No space left"):
        evaluate(0.9)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written  # no staging folder, nothing half-new
    monkeypatch.undo()
    evaluate(0.9)
    assert (tmp_path / "metrics.csv").read_bytes() == b"val_mean_dice,0.9\n"
    assert len(list(tmp_path.iterdir())) == 3


def test_disk_full_during_segment_is_one_clear_line_per_image(smoke_model, tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]:
        shutil.copy(f, images)
    monkeypatch.setattr(Image.Image, "save", _half_then(OSError(errno.ENOSPC, "No space left on device")))
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    for line, src in zip(failed, sorted(images.iterdir())):
        assert line == f"FAILED {src}: cannot write {out / (src.stem + '.png')}: No space left on device"
    assert list(out.iterdir()) == []  # no truncated mask, no temporary file


def _writes_outside_atomic_output(source: str) -> list[int]:
    """Line numbers of file writes (``open`` for writing, ``torch.save``, ``.save``, ``.savefig``,
    ``.write_text``/``.write_bytes``, ``imwrite``, ``ZipFile(.., "w")``) not inside ``with atomic_output``."""
    import ast

    def is_write(call: ast.Call) -> bool:
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("save", "savefig", "write_text", "write_bytes", "imwrite"):
            return True
        if name in ("open", "ZipFile"):
            mode = (
                call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
            )
            return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and mode.value[:1] in "wax"
        return False

    def is_atomic(item: ast.withitem) -> bool:
        c = item.context_expr
        return isinstance(c, ast.Call) and getattr(c.func, "id", getattr(c.func, "attr", "")) == "atomic_output"

    bad: list[int] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for k, item in enumerate(node.items):
                inner = guarded or any(is_atomic(i) for i in node.items[:k])
                visit(item.context_expr, inner)
            guarded = guarded or any(is_atomic(i) for i in node.items)
            for child in node.body:
                visit(child, guarded)
            return
        if isinstance(node, ast.Call) and is_write(node) and not guarded:
            bad.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return bad


def test_every_file_the_package_writes_goes_through_atomic_output():
    """Checkpoints, masks, reports, exported models: temp name + rename. Not ours: TensorBoard event
    logs (MONAI appends to them); bundle_zip's members go into a temporary folder that is renamed
    onto the target at the end (the same guarantee for a folder)."""
    allowed = {
        ("bundle_zip.py", "_extract"),  # into a temporary folder renamed onto the target at the end
        ("bundle_zip.py", "_copy_and_hash"),  # a private copy in a temporary folder, never a result
        ("background.py", "__init__"),  # the worker's input, in the run's own temporary folder
        ("handlers.py", "acquire"),  # the training folder's lock file (a process id), not a result
    }
    offenders = []
    lib = REPO / "slicer_extension" / "BrainTumorSegmentation" / "BrainTumorSegmentationLib"
    for path in sorted(
        [*(REPO / "brainseg_monai").rglob("*.py"), *(BUNDLE / "scripts").glob("*.py"), *lib.glob("*.py")]
    ):
        source = path.read_text()
        lines = source.splitlines()
        for number in _writes_outside_atomic_output(source):
            func = next((m.group(1) for line in reversed(lines[:number]) if (m := re.match(r"\s*def (\w+)", line))), "")
            if (path.name, func) not in allowed:
                offenders.append(f"{path.name}:{number} in {func}(): {lines[number - 1].strip()}")
    assert offenders == []


# --------------------------------------------------------------------------- resume and determinism


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        SMOKE_TRAIN,
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(out / "eval"),
        "--train#trainer#max_epochs",
        "3",
        "--batch_size",
        "2",
        "--seed",
        "7",
        *extra,
    ]


def _popen(out: Path, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """A training run; its output goes to ``log`` (a file: a full pipe would stall it) or to a pipe."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if log is None:
        return subprocess.Popen(
            _train_cmd(out, *extra), cwd=BUNDLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(_train_cmd(out, *extra), cwd=BUNDLE, env=env, stdout=f, stderr=subprocess.STDOUT)


def _losses(log: str) -> list[str]:
    return re.findall(r"Epoch: (\d+/\d+, Iter: \d+/\d+) -- train_loss: ([0-9.]+)", log)


def _state(run: Path) -> dict:
    return torch.load(run / "models" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)


def _assert_same_tensors(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
    """Three 3-epoch smoke runs with seed 7 side by side: A and B uninterrupted, C SIGKILLed in the
    middle of epoch 2 (after epoch 1's checkpoint) and then resumed with ``--resume true``."""
    base = tmp_path_factory.mktemp("determinism")
    runs = {name: _popen(base / name, log=base / f"{name}.log") for name in ("a", "b")}
    runs["c"] = _popen(base / "c")
    watchdog = threading.Timer(480, lambda: [p.kill() for p in runs.values()])
    watchdog.start()
    try:
        killed_log = []
        for line in runs["c"].stdout:
            killed_log.append(line)
            if "Epoch: 2/3, Iter: 2/6" in line:  # epoch 1 is saved; epoch 2 is under way
                runs["c"].send_signal(signal.SIGKILL)
                break
        runs["c"].wait()
        killed_log.append(runs["c"].stdout.read())
        state_at_kill = _state(base / "c")
        resumed = _popen(base / "c", "--resume", "true", log=base / "c_resumed.log")
        for proc in (runs["a"], runs["b"], resumed):
            proc.wait()
        runs["c"].stdout.close()
        logs = {name: (base / f"{name}.log").read_text() for name in ("a", "b")}
        logs["c"] = (base / "c_resumed.log").read_text()
        codes = {name: runs[name].returncode for name in ("a", "b")} | {
            "c_killed": runs["c"].returncode,
            "c": resumed.returncode,
        }
    finally:
        watchdog.cancel()
    return {
        "base": base,
        "logs": logs,
        "killed_log": "".join(killed_log),
        "codes": codes,
        "state_at_kill": state_at_kill,
    }


def test_two_runs_with_the_same_seed_give_identical_losses_and_weights(training_runs):
    base, logs = training_runs["base"], training_runs["logs"]
    assert training_runs["codes"]["a"] == 0 and training_runs["codes"]["b"] == 0, logs["a"][-2000:]
    losses = _losses(logs["a"])
    assert len(losses) == 3 * 6 and losses == _losses(logs["b"])
    _assert_same_tensors(_state(base / "a"), _state(base / "b"))
    _assert_same_tensors(
        torch.load(base / "a" / "models" / "model.pt", weights_only=True),
        torch.load(base / "b" / "models" / "model.pt", weights_only=True),
    )


def test_training_killed_mid_epoch_resumes_to_the_same_final_weights(training_runs):
    base, logs, codes = training_runs["base"], training_runs["logs"], training_runs["codes"]
    assert codes["c_killed"] == -signal.SIGKILL
    assert "Epoch[2] Complete" not in training_runs["killed_log"]  # killed during epoch 2
    assert training_runs["state_at_kill"]["trainer"]["iteration"] == 1 * 6  # the last state saved: epoch 1
    assert codes["c"] == 0, logs["c"][-3000:]
    resumed = _losses(logs["c"])
    assert [step for step, _ in resumed] == [step for step, _ in _losses(logs["a"])[1 * 6 :]]  # epochs 2 and 3 only
    assert resumed == _losses(logs["a"])[1 * 6 :]
    final_a, final_c = _state(base / "a"), _state(base / "c")
    for key in ("model", "optimizer", "lr_scheduler", "validator"):
        _assert_same_tensors(final_a[key], final_c[key], key)
    _assert_same_tensors(
        torch.load(base / "a" / "models" / "model.pt", weights_only=True),
        torch.load(base / "c" / "models" / "model.pt", weights_only=True),
    )


def test_epoch_seeder_makes_each_epoch_depend_on_seed_and_epoch_only():
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    from scripts.handlers import EpochSeeder

    transform = Compose([RandFlipd("image", prob=0.5), RandGaussianNoised("image", prob=1.0)])
    engine = type("E", (), {})()
    engine.state = type("S", (), {"epoch": 3})()

    def draw():
        EpochSeeder(seed=5, data=transform)(engine)
        return torch.rand(3), np.random.rand(), transform({"image": torch.zeros(1, 4, 4)})["image"]

    first = draw()
    torch.rand(100), np.random.rand(100), transform({"image": torch.zeros(1, 4, 4)})  # disturb every state
    second = draw()
    for x, y in zip(first, second):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    engine.state.epoch = 4
    assert not torch.equal(draw()[0], first[0])


# --------------------------------------------------------------------------- long runs


def test_segment_many_images_skips_bad_ones_and_a_rerun_does_only_what_is_missing(smoke_model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    samples = sorted(SAMPLE_SPLIT.glob("*.jpg"))
    small = [Image.open(f).convert("L").resize((160, 160)) for f in samples]
    for i in range(30):
        if i in (7, 15, 23):
            (images / f"img_{i:03d}.png").write_bytes(b"broken" * i)  # bad files in the middle
        else:
            small[i % len(small)].save(images / f"img_{i:03d}.png")
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 27  # streamed, one mask path per line
    assert [line.split(":")[0] for line in captured.err.splitlines() if line.startswith("FAILED")] == [
        f"FAILED {images / f'img_{i:03d}.png'}" for i in (7, 15, 23)
    ]
    assert f"segmented 27 of 30 image(s) into {out}" in captured.err
    assert f"3 failed: {images / 'img_007.png'}, {images / 'img_015.png'}, {images / 'img_023.png'}" in captured.err
    assert len(list(out.iterdir())) == 28  # 27 masks and the tumor report
    assert len((out / "tumor_report.csv").read_text().splitlines()) == 28  # header and 27 rows

    removed = [out / f"img_{i:03d}.png" for i in (2, 11, 29)]
    for p in removed:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(_segment_args(smoke_model, out, images) + ["--skip-existing"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(p) for p in removed]  # only what was missing
    assert "segmented 3 of 30 image(s)" in captured.err and "24 already done" in captured.err
    assert {p: p.stat().st_mtime_ns for p in kept if p.suffix == ".png"} == {
        p: t for p, t in kept.items() if p.suffix == ".png"
    }  # untouched masks
    assert len(list(out.iterdir())) == 28
    # the report still covers every mask: the earlier run's rows kept, the redone ones replaced
    assert len((out / "tumor_report.csv").read_text().splitlines()) == 28


def test_a_file_name_as_long_as_the_file_system_allows_is_segmented(smoke_model, tmp_path, capsys):
    """The temporary name of an atomic write must fit wherever the final name fits (255 bytes)."""
    images = tmp_path / "images"
    images.mkdir()
    long_jpg = images / ("t" * 250 + ".jpg")  # 254 bytes; its mask is <stem>.png, 254 bytes too
    Image.fromarray(_grey()).save(long_jpg)
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 0
    captured = capsys.readouterr()
    assert "segmented 1 of 1 image(s)" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(["t" * 250 + ".png", "tumor_report.csv"])


def test_nan_in_a_float_tiff_and_an_empty_nifti_dimension_are_refused_by_name(smoke_model, tmp_path, capsys):
    import nibabel as nib

    images = tmp_path / "images"
    images.mkdir()
    values = _grey().astype(np.float32)
    values[10, 10], values[20, 30] = np.nan, np.inf
    Image.fromarray(values, mode="F").save(images / "float_nan.tif")
    Image.fromarray(_grey().astype(np.float32), mode="F").save(images / "float_ok.tif")
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 0), np.float32), np.eye(4)), images / "no_slices.nii.gz")
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, images)) == 1
    err = capsys.readouterr().err
    assert f"FAILED {images / 'float_nan.tif'}: image contains 2 NaN or infinite value(s)" in err
    assert f"FAILED {images / 'no_slices.nii.gz'}: image has a dimension of length 0" in err
    assert "segmented 1 of 3 image(s)" in err
    assert sorted(p.name for p in out.iterdir()) == ["float_ok.png", "tumor_report.csv"]


# --------------------------------------------------------------------------- outputs never overwrite inputs


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluate_refuses_outlines_or_a_split_inside_its_output(smoke_model, tmp_path, capsys):
    out = tmp_path / "out"
    outlines = out / "masks"
    shutil.copytree(SAMPLE_SPLIT.parent / "valid_outlines", outlines)
    split = out / "split"
    shutil.copytree(SAMPLE_SPLIT, split)
    before = _tree(out)
    common = ["--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]
    cases = [
        ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--outlines", str(outlines), *common],
        ["evaluate", str(split), "--output-dir", str(out), *common],
        ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--model", str(out / "split" / "x.pt")],
    ]
    for argv in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "--output-dir" in err and "holds the input" in err and str(out) in err
    assert _tree(out) == before, "nothing under the output folder changed"


def test_segment_refuses_inputs_inside_its_output(smoke_model, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    Image.fromarray(_grey()).save(out / "overlays" / "scan.png")
    before = _tree(out)
    assert main([*_segment_args(smoke_model, out, out / "overlays"), "--overlays"]) == 1
    assert "holds the input" in capsys.readouterr().err
    assert _tree(out) == before


def test_segment_refuses_inputs_whose_masks_would_share_a_name(smoke_model, tmp_path, capsys):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    Image.fromarray(_grey()).save(d1 / "scan.jpg")
    Image.fromarray(_grey()).save(d1 / "scan.png")
    Image.fromarray(_grey()).save(d2 / "other.jpg")
    Image.fromarray(_grey()).save(d2 / "scan.jpg")
    out = tmp_path / "out"
    assert main(_segment_args(smoke_model, out, d1, d2)) == 1
    err = capsys.readouterr().err
    assert "both would be written to scan.png" in err and str(d1 / "scan.jpg") in err
    assert not out.exists(), "refused before any work"
    # distinct names are fine: every input gets its own mask, and the count says so
    assert main(_segment_args(smoke_model, out, d2)) == 0
    assert "segmented 2 of 2 image(s)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["other.png", "scan.png", "tumor_report.csv"]


def test_a_file_name_with_a_newline_stays_on_one_failed_line(smoke_model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    bad = images / "evil\nFAILED fake.png: injected.png"
    bad.write_bytes(b"not an image")
    assert main(_segment_args(smoke_model, tmp_path / "out", bad)) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and repr(str(bad)) in failed[0]


def test_resume_with_more_epochs_continues_the_learning_rate_schedule(tmp_path):
    """--resume with more epochs: the cosine schedule goes on down to its minimum, never back up."""
    from brainseg_monai.report import read_scalars

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [*_train_cmd(out), "--train#trainer#max_epochs", "1"], cwd=BUNDLE, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-2000:]
    more = subprocess.run(
        [*_train_cmd(out), "--train#trainer#max_epochs", "3", "--resume", "true"],
        cwd=BUNDLE,
        env=env,
        capture_output=True,
        text=True,
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert "schedule now ends at epoch 3 (was 1)" in more.stdout + more.stderr
    scalars = read_scalars(out / "eval")
    tag = next(t for t in scalars if t.split("/")[0].lower() in ("lr", "learning_rate"))
    lrs = [value for _, _, value in sorted(scalars[tag], key=lambda point: point[0])]
    assert len(lrs) >= 3
    assert all(later <= earlier + 1e-12 for earlier, later in zip(lrs, lrs[1:])), lrs
    state = torch.load(out / "models" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert state["lr_scheduler"]["T_max"] == 3


def test_evaluate_warns_when_no_outline_matches_the_split(smoke_model, tmp_path, capsys):
    outlines = tmp_path / "outlines"
    outlines.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outlines / "unrelated.png")
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(tmp_path / "out"), "--outlines", str(outlines)]
    assert main([*args, "--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING --outlines {outlines}: no outline matches an image of the split" in err


def test_two_training_runs_into_one_folder_the_second_stops_before_writing(tmp_path):
    from scripts.handlers import RunFolderLock

    folder = tmp_path / "models"
    first = RunFolderLock(folder)
    first.acquire()
    try:
        # another process tries the same folder: refused, naming the folder and the owner
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]); from scripts.handlers import RunFolderLock\n"
            "try:\n    RunFolderLock(sys.argv[1]).acquire()\nexcept RuntimeError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(folder), str(BUNDLE)], capture_output=True, text=True)
        assert proc.returncode == 3 and f"process {os.getpid()}" in proc.stdout and str(folder) in proc.stdout
    finally:
        first.release()
    # released (or the first process gone): the next run takes it and cleans a killed run's temp files
    (folder / ".checkpoint_latest.pt.abc123.pt").write_bytes(b"half")
    (folder / ".model.pt.xyz.pt").write_bytes(b"half")
    (folder / "model.pt").write_bytes(b"kept")
    second = RunFolderLock(folder)
    second.acquire()
    second.release()
    assert sorted(p.name for p in folder.iterdir()) == [".training.lock", "model.pt"]


def test_a_training_run_holds_the_lock_while_it_runs(tmp_path):
    """Through monai.bundle: a second run started into the folder of a running one fails at once."""
    from scripts.handlers import RunFolderLock

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [*_train_cmd(out), "--train#trainer#max_epochs", "1000"],  # runs until killed below
        cwd=BUNDLE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "models" / RunFolderLock.LOCK_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the first run takes the lock as its trainer starts
        assert first.poll() is None
        second = subprocess.run([*_train_cmd(out)], cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0
        assert f"another training run (process {first.pid})" in second.stdout + second.stderr
    finally:
        first.kill()
        first.wait(60)


def test_a_large_photo_is_segmented_like_its_training_size_version(tmp_path):
    """ShrinkLarged: a 2560 px copy of a valid slice gives the mask of the 640 px original, at 2560 px."""
    from scripts.predictor import BundlePredictor

    assert (BUNDLE / "models" / "model.pt").is_file(), "the bundle ships its weights in git"
    predictor = BundlePredictor(device="cpu")
    source = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    with Image.open(source) as im:
        big = im.convert("RGB").resize((2560, 2560), Image.BICUBIC)
    big.save(tmp_path / "big.png")
    small_mask = predictor.predict_file(source)
    big_mask = predictor.predict_file(tmp_path / "big.png")
    assert big_mask.shape == (2560, 2560)
    shrunk = np.asarray(Image.fromarray(big_mask * 255).resize(small_mask.shape[::-1], Image.NEAREST)) > 0
    inter, union = (shrunk & (small_mask > 0)).sum(), (shrunk | (small_mask > 0)).sum()
    assert union == 0 or inter / union > 0.8


def test_training_refuses_to_replace_weights_it_did_not_make(tmp_path):
    """The default ckpt_dir is the bundle's models/, which holds the shipped weights: a new run there stops
    before writing anything; --resume true (its own weights) or --overwrite_weights true go on."""
    from conftest import CONFIGS, SMOKE_NETWORK, run_bundle

    models = tmp_path / "models"
    models.mkdir()
    shipped = b"the shipped weights"
    (models / "model.pt").write_bytes(shipped)
    configs = f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']"
    args = ["--config_file", configs, "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "eval")]
    proc = run_bundle(*args)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(models / "model.pt") in last and "--overwrite_weights true" in last
    assert sorted(p.name for p in models.iterdir()) == ["model.pt"] and (models / "model.pt").read_bytes() == shipped
    # "--overwrite_weights false --resume false" reaches the guard as text, which bool() calls true: it means false
    from scripts.handlers import ExistingWeightsGuard

    with pytest.raises(RuntimeError, match="--overwrite_weights true"):
        ExistingWeightsGuard(models, resume="false", overwrite="false")()
    proc = run_bundle(*args, "--overwrite_weights", "true", "--train#trainer#max_epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (models / "model.pt").read_bytes() != shipped


def test_a_narrow_slice_is_padded_to_a_square_not_stretched():
    """PadToSquared: a slice cut to the columns its head spans (a narrow field of view) is segmented as the same
    slice put back in a square frame of its own air, and its mask comes back at its own size."""
    from scripts.io import read_grey
    from scripts.predictor import BundlePredictor

    predictor = BundlePredictor(device="cpu")
    for source in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:4]:
        grey = read_grey(source)
        left, right = 120, grey.shape[1] - 120
        narrow = grey[:, left:right]
        found = predictor.predict_arrays([narrow], details=True)[0]
        assert found.mask.shape == narrow.shape and found.probability.shape == narrow.shape, source.name
        framed = np.full(grey.shape, narrow.min(), np.float32)
        framed[:, left:right] = narrow
        expected = predictor.predict_arrays([framed], details=True)[0]
        # the same network input: the same probabilities where the slice is
        assert np.allclose(found.probability, expected.probability[:, left:right], atol=1e-5), source.name
        assert found.verdict == expected.verdict, source.name
        inter = (found.mask & expected.mask[:, left:right]).sum()
        union = (found.mask | expected.mask[:, left:right]).sum()
        assert union == 0 or inter / union > 0.9, (source.name, inter / union)
