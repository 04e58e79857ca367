"""Runs that must stop say why in one line, naming what the user gave: no traceback, no temporary path.

Real runs through the ``brainseg`` CLI: ``train --resume`` (and ``--recipe``) with other data than the
run was trained on, a training refused at its start, an evaluation onto a full disk (a real tmpfs of
4 KiB in a mount namespace), weights that are a device, and bundle zips that are damaged or incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLE, SAMPLE_SPLIT, smoke_train_argv

from brainseg_monai.cli import main
from brainseg_monai.run_record import DATA_RECORD

BRAINSEG = Path(sys.executable).parent / "brainseg"
IMAGE = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]


def _dataset(root: Path) -> Path:
    for split in ("train", "valid"):
        shutil.copytree(SAMPLE_SPLIT, root / split)
    return root


def _drop_an_annotation(split: Path) -> None:
    data = json.loads((split / "_annotations.coco.json").read_text())
    data["annotations"] = data["annotations"][1:]
    (split / "_annotations.coco.json").write_text(json.dumps(data))


def test_resume_goes_on_only_with_the_data_the_run_was_trained_on(tmp_path, capsys):
    dataset = _dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(smoke_train_argv(dataset, run)) == 0
    record = json.loads((run / DATA_RECORD).read_text())
    assert record["dataset_dir"] == str(dataset) and (record["train_split"], record["val_split"]) == ("train", "valid")
    assert record["category_map"] is None and set(record["annotations_sha256"]) == {"train", "valid"}
    weights = (run / "models" / "model.pt").read_bytes()
    capsys.readouterr()

    other = _dataset(tmp_path / "other")
    _drop_an_annotation(other / "train")
    assert main(smoke_train_argv(other, run, "--resume")) == 1
    err = capsys.readouterr().err
    assert f"{run}: --resume with other data than the run was trained on: dataset {other} (the run's: {dataset})" in err
    assert "training not started" in err and f"delete {run / DATA_RECORD}" in err

    assert main(smoke_train_argv(dataset, run, "--resume", "--category-map", '{"1": 1, "2": 1}')) == 1
    assert 'category map {"1": 1, "2": 1} (the run\'s: the default (Tumor -> 1))' in capsys.readouterr().err
    assert main(smoke_train_argv(dataset, run, "--resume", "--train-split", "valid")) == 1
    assert "training split 'valid' (the run's: 'train')" in capsys.readouterr().err
    _drop_an_annotation(dataset / "valid")  # the same folder, changed since
    assert main(smoke_train_argv(dataset, run, "--resume")) == 1
    assert "the annotations of valid changed since the run began" in capsys.readouterr().err
    assert (run / "models" / "model.pt").read_bytes() == weights  # nothing was trained by a refused run

    moved = tmp_path / "moved"  # the run's own data in another folder: the same data
    _dataset(moved)
    assert main(smoke_train_argv(moved, run, "--resume", "--epochs", "2")) == 0
    assert json.loads((run / DATA_RECORD).read_text()) == record


def test_a_recipe_rerun_or_resume_with_other_data_is_refused(tmp_path, capsys):
    from test_recipe import TINY

    dataset = _dataset(tmp_path / "data")
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    out = tmp_path / "recipe"

    def recipe(data: Path, *extra: str) -> list[str]:
        args = ["train", "--recipe", "--dataset-dir", str(data), "--output-dir", str(out), "--stages", "box"]
        return args + ["--epochs-scale", "0.01", "--device", "cpu", "--config", str(tiny), *extra]

    assert main(recipe(dataset)) == 0
    assert json.loads((out / DATA_RECORD).read_text())["dataset_dir"] == str(dataset)
    capsys.readouterr()
    other = _dataset(tmp_path / "other")
    _drop_an_annotation(other / "train")
    for extra, said in ((("--resume",), "--resume"), ((), "a rerun of the recipe")):
        assert main(recipe(other, *extra)) == 1
        err = capsys.readouterr().err
        assert f"{out}: {said} with other data than the run was trained on: dataset {other}" in err
        assert "nothing trained" in err


def test_a_training_refused_at_its_start_says_so_once_without_a_traceback(tmp_path):
    dataset = _dataset(tmp_path / "data")
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "model.pt").write_bytes(b"someone else's weights")
    proc = subprocess.run([str(BRAINSEG), *smoke_train_argv(dataset, run)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "terminating due to exception" not in proc.stderr
    said = f"{run / 'models' / 'model.pt'}: already there"
    assert proc.stderr.count(said) == 1 and f"brainseg train: error: {said}" in proc.stderr
    assert not (run / DATA_RECORD).exists()  # the folder's weights are not this run's: nothing recorded for them


def _can_mount_tmpfs(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$0"', str(folder)], capture_output=True
    )
    return probe.returncode == 0


def test_evaluate_on_a_full_disk_ends_with_one_line_naming_the_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("no mount namespace here to make a small disk (unshare -rm)")
    # a 4 KiB tmpfs in a private mount namespace: the first mask fills it
    script = 'mount -t tmpfs -o size=4k tmpfs "$0" && exec "$1" evaluate "$2" --output-dir "$0/out" --device cpu'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(disk), str(BRAINSEG), str(SAMPLE_SPLIT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "terminating due to exception" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert line.startswith(f"brainseg evaluate: error: cannot write {disk}/out/masks/") and line.endswith(
        ".png: No space left on device"
    )


def test_a_full_disk_without_a_file_name_is_said_as_such():
    from scripts.errors import error_lines

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(OSError) as full:
        with open("/dev/full", "w") as f:  # the write fails at close, and Python names no file
            f.write("x")
    assert error_lines(RuntimeError("applying transform <Compose>").with_traceback(None)) == [
        "applying transform <Compose>"
    ]
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = full.value
    assert error_lines(wrapped) == [
        "No space left on device: the disk that the results are written to is full; free some space or write them "
        "elsewhere"
    ]


def test_weights_that_are_not_a_regular_file_are_called_so(tmp_path, capsys):
    out, folder = tmp_path / "out", tmp_path / "weights_folder"
    folder.mkdir()
    pointer, damaged = tmp_path / "pointer.pt", tmp_path / "damaged.pt"
    # a clone without git lfs: a pointer where the weights should be; and bytes that are no pickle at all
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 6500000\n")
    damaged.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    for model, said in (
        (str(pointer), f"{pointer}: a Git LFS pointer, not the weights: fetch them with 'git lfs pull'"),
        (str(damaged), f"{damaged}: not a readable torch checkpoint: damaged, or not a weights file"),
        ("/dev/zero", "/dev/zero: not a regular file (a character device): not a weights file"),
        (str(folder), f"{folder}: not a regular file (a folder): not a weights file"),
        (str(tmp_path / "missing.pt"), f"{tmp_path / 'missing.pt'}: model weights not found"),
    ):
        assert main(["segment", str(IMAGE), "--output-dir", str(out), "--model", model, "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert f"brainseg segment: error: {said}" in err, err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_member_is_named_by_the_zip_and_the_member(tmp_path, capsys):
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(BUNDLE / "configs" / "inference.json", "bundle/configs/inference.json")
        zf.writestr("bundle/configs/notes.json", b'{"note": "' + b"a" * 200 + b'"}')
    data = bytearray(z.read_bytes())
    at = data.index(b"a" * 200)
    data[at + 100] = ord("b")  # the stored bytes no longer match the member's CRC
    z.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    assert main(["unpack", str(z), "--dest", str(dest), "--sha256", _sha(z)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"brainseg unpack: error: {z}: member 'bundle/configs/notes.json': cannot unpack (Bad CRC-32 for file "
        "'bundle/configs/notes.json'): refused, nothing unpacked"
    )
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip"]


def test_a_bundle_zip_without_weights_is_named_by_the_zip_and_member_not_a_temporary_folder(tmp_path, capsys):
    z = tmp_path / "no_weights.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for path in sorted(BUNDLE.rglob("*")):
            rel = path.relative_to(BUNDLE)
            if path.is_file() and rel.parts[0] in ("configs", "scripts") and "__pycache__" not in rel.parts:
                zf.write(path, f"my_bundle/{rel.as_posix()}")
        zf.write(BUNDLE / "models" / "input_reference.json", "my_bundle/models/input_reference.json")
    out = tmp_path / "out"
    args = ["segment", str(IMAGE), "--output-dir", str(out), "--bundle-zip", str(z), "--sha256", _sha(z)]
    assert main([*args, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"brainseg segment: error: {z} (member my_bundle/models/model.pt): model weights not found" in err
    assert "brainseg_bundle_" not in err


def test_a_bundle_run_reads_every_input_before_it_writes_anything(tmp_path):
    """``monai.bundle run`` over a folder with a truncated JPEG, an empty file and a file that is no image among
    good ones: refused before any mask, naming the first problem and every other file at fault; the output
    folder is not even made. (``brainseg segment`` skips such files and reports them instead.)"""
    from conftest import run_bundle

    folder, out = tmp_path / "scans", tmp_path / "out"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "a_good.jpg")
    (folder / "b_truncated.jpg").write_bytes(IMAGE.read_bytes()[:2000])
    (folder / "c_empty.png").write_bytes(b"")
    (folder / "d_notes.png").write_text("not a picture", encoding="utf-8")
    proc = run_bundle("--config_file", "configs/inference.json", "--dataset_dir", str(folder), "--output_dir", str(out))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / 'b_truncated.jpg'}: image file is unreadable or truncated"), last
    assert f"(and 2 more input(s) that cannot be read: {folder / 'c_empty.png'}, {folder / 'd_notes.png'})" in last
    assert last.endswith("; nothing was segmented") and not out.exists()
