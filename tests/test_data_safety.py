"""Data safety and resource limits, on real files through the real entry points (no mocks).

* Sizes are read from the header text before ITK allocates: NRRD/MetaImage sizes past 32 bits, DICOM
  frames, every file of a DICOM series; a zip's member count from its end record.
* One output rule (:func:`scripts.io.check_output_dir`) in every entry point: ``brainseg`` train,
  ``train --recipe``, evaluate, segment, package, the split makers, and the bundle's own workflows
  (``python -m monai.bundle run`` with inference.json, train.json, evaluate.json).
* An interrupted run (SIGTERM, Ctrl-C) leaves no hidden temporary file and no summary that looks
  finished; a later run removes what a killed one left; ``--skip-existing`` redoes an input whose
  outputs are not all there, and its report lists every input.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLE, CONFIGS, REPO, SAMPLE_SPLIT, SMOKE_NETWORK, run_bundle, write_volume
from PIL import Image

from brainseg_monai.bundle_zip import MAX_MEMBERS, sha256_file
from brainseg_monai.cli import main
from brainseg_monai.metrics import check_replaced_folders
from scripts.io import MAX_PIXELS, atomic_output, read_medical_image

itk = pytest.importorskip("itk")


def _bundle_copy(dst: Path) -> Path:
    """The bundle's configs and code, with an empty models/ folder: nothing a test does can reach the real one."""
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    (dst / "models").mkdir()
    return dst


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _hidden(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".")]


def _dataset(root: Path) -> Path:
    shutil.copytree(SAMPLE_SPLIT, root / "train")
    shutil.copytree(SAMPLE_SPLIT, root / "valid")
    return root


# --------------------------------------------------------------------------- sizes from the header text


def _nrrd_header(sizes: str) -> str:
    return f"NRRD0004\ntype: uint8\ndimension: {len(sizes.split())}\nsizes: {sizes}\nencoding: raw\n"


@pytest.mark.parametrize(
    "name, sizes",
    [("one.nrrd", "4294967297 1 1"), ("four.nrrd", "4294967297 2 2"), ("detached.nhdr", "4294967297 2 2")],
)
def test_nrrd_sizes_past_32_bits_are_refused_from_the_header(tmp_path, name, sizes):
    """ITK reads ``sizes: 4294967297 1 1`` as 1 x 1 x 1 (32 bits), then allocates gigabytes: the text is checked."""
    path = tmp_path / name
    if name.endswith(".nhdr"):
        (tmp_path / "detached.raw").write_bytes(bytes(100))
        path.write_text(_nrrd_header(sizes) + "data file: detached.raw\n")
    else:
        path.write_bytes(_nrrd_header(sizes).encode() + b"\n" + bytes(100))
    with pytest.raises(ValueError) as error:
        read_medical_image(path)
    assert str(error.value).startswith(f"{path}: {'x'.join(sizes.split())} = ")
    assert f"over the limit of {MAX_PIXELS}" in str(error.value)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_dimsize_past_32_bits_is_refused_from_the_header(tmp_path, suffix):
    path = tmp_path / f"big{suffix}"
    data = "LOCAL" if suffix == ".mha" else "big.raw"
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4294967297 2 2\nElementType = MET_UCHAR\n"
    header += f"ElementDataFile = {data}\n"
    (tmp_path / "big.raw").write_bytes(bytes(100))
    path.write_bytes(header.encode() + (bytes(100) if suffix == ".mha" else b""))
    with pytest.raises(ValueError, match=f"4294967297x2x2 = 17179869188 pixels, over the limit of {MAX_PIXELS}"):
        read_medical_image(path)


@pytest.mark.parametrize(
    "directions, said",
    [
        ("(1,0,0) (1,0,0) (0,0,1)", "its direction matrix is singular: an axis without a direction, or two axes along"),
        ("(1,0,0) (0,0,0) (0,0,1)", "Zero-valued spacing is not supported"),
    ],
)
def test_a_volume_whose_axes_have_no_direction_is_refused_naming_the_file_in_one_line(tmp_path, directions, said):
    """The slice loop reads a volume's directions to find its axial slices: ITK refuses a singular matrix first."""
    path = tmp_path / "bad.nrrd"
    header = _nrrd_header("6 5 4") + f"space: left-posterior-superior\nspace directions: {directions}\n"
    path.write_bytes(header.encode() + b"\n" + bytes(120))
    with pytest.raises(ValueError) as error:
        read_medical_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot read image (") and said in message and "\n" not in message


def test_a_size_field_that_is_not_whole_numbers_is_refused_by_name(tmp_path):
    path = tmp_path / "bad.nrrd"
    path.write_bytes(_nrrd_header("4 x 1").encode() + b"\n" + bytes(4))
    with pytest.raises(ValueError, match=r"bad.nrrd: header field 'sizes' is '4 x 1', not a list of whole numbers"):
        read_medical_image(path)


def _write_series(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    image = itk.image_from_array(np.ones((n, 16, 16), dtype=np.int16))
    names = [folder / f"slice{k:03d}.dcm" for k in range(n)]
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New(
        Input=image, FileNames=[str(p) for p in names], ImageIO=itk.GDCMImageIO.New()
    )
    writer.Update()
    return names


def _patch_us(path: Path, element: int, value: int) -> None:
    """Set a (0028,xxxx) US element of an implicit VR little endian file (ITK's GDCM writer) in place."""
    data = path.read_bytes()
    at = data.find(struct.pack("<HHI", 0x0028, element, 2))
    assert at > 132
    path.write_bytes(data[: at + 8] + struct.pack("<H", value) + data[at + 10 :])


def test_a_dicom_series_is_refused_when_its_headers_add_up_past_the_limit(tmp_path):
    """Three 16x16 files claiming 8000 x 8000 each: 192 M pixels, refused before ITK allocates the volume."""
    series = tmp_path / "series"
    for path in _write_series(series, 3):
        _patch_us(path, 0x0010, 8000)  # Rows
        _patch_us(path, 0x0011, 8000)  # Columns
    with pytest.raises(ValueError) as error:
        read_medical_image(series)
    message = str(error.value)
    assert message.startswith(f"{series}: DICOM series of 3 files holds over {MAX_PIXELS} pixels (the limit)")
    assert "8000x8000x1" in message


def test_a_dicom_series_under_the_limit_is_read(tmp_path):
    array, _ = read_medical_image(_write_series(tmp_path / "series", 3)[0].parent)
    assert array.shape == (3, 16, 16)


@pytest.mark.parametrize("frames", [b"999999", b"4294967297"])
def test_dicom_number_of_frames_is_checked_from_its_text(tmp_path, frames):
    """NumberOfFrames 4294967297 reaches ITK as 2147483647 (32 bits): the tag's own text is counted."""
    (single,) = _write_series(tmp_path / "one", 1)
    data = single.read_bytes()
    at = data.find(struct.pack("<HH", 0x0028, 0x0010))  # (0028,0008) goes just before Rows
    path = tmp_path / "frames.dcm"
    path.write_bytes(data[:at] + struct.pack("<HHI", 0x0028, 0x0008, len(frames)) + frames + data[at:])
    with pytest.raises(ValueError, match=f"16x16x{frames.decode()} = .* pixels, over the limit of {MAX_PIXELS}"):
        read_medical_image(path)


def _many_member_zip(path: Path, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle/configs/metadata.json", "{}")
        for k in range(n):
            zf.writestr(f"bundle/docs/{k}.txt", b"")
    return path


def test_a_zip_with_too_many_members_is_refused_from_its_end_record(tmp_path, capsys):
    zip_path = _many_member_zip(tmp_path / "many.zip", MAX_MEMBERS + 1)
    dest = tmp_path / "dest"
    assert main(["unpack", str(zip_path), "--dest", str(dest), "--sha256", sha256_file(zip_path)]) == 1
    err = capsys.readouterr().err
    assert f"{zip_path}: has {MAX_MEMBERS + 2} members, over the limit of {MAX_MEMBERS}: refused" in err
    assert not dest.exists() and _hidden(tmp_path) == []


def test_a_zip_whose_end_record_under_counts_is_refused_by_its_directory_size(tmp_path, capsys):
    zip_path = _many_member_zip(tmp_path / "liar.zip", MAX_MEMBERS + 1)
    data = bytearray(zip_path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)  # members on this disk, members in all
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    assert main(["unpack", str(zip_path), "--dest", str(dest), "--sha256", sha256_file(zip_path)]) == 1
    err = capsys.readouterr().err
    assert "has a member directory of" in err and f"over the limit of {MAX_MEMBERS}" in err
    assert not dest.exists()


# --------------------------------------------------------------------------- one output rule, every entry point


@pytest.mark.parametrize("where", ["inside_dataset", "inside_split", "parent_of_dataset", "bundle_models"])
def test_brainseg_train_refuses_an_output_that_holds_or_lies_in_what_it_reads(tmp_path, capsys, where):
    data = _dataset(tmp_path / "data")
    bundle = _bundle_copy(tmp_path / "bundle")
    out = {
        "inside_dataset": data / "run",
        "inside_split": data / "train" / "run",
        "parent_of_dataset": tmp_path,
        "bundle_models": bundle / "models",
    }[where]
    before = _tree(tmp_path)
    argv = ["train", "--dataset-dir", str(data), "--output-dir", str(out), "--bundle-dir", str(bundle), "--epochs", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--output-dir {out}: " in err
    assert ("holds" if where == "parent_of_dataset" else "inside") in err
    assert _tree(tmp_path) == before, "nothing written"


def test_brainseg_train_recipe_refuses_an_output_inside_the_dataset(tmp_path, capsys):
    data = _dataset(tmp_path / "data")
    before = _tree(tmp_path)
    assert main(["train", "--recipe", "--dataset-dir", str(data), "--output-dir", str(data / "recipe")]) == 1
    err = capsys.readouterr().err
    assert f"--output-dir {data / 'recipe'}: inside the dataset {data}" in err
    assert _tree(tmp_path) == before


def test_brainseg_segment_and_evaluate_refuse_the_bundles_folders_and_a_splits_parent(tmp_path, capsys):
    bundle = _bundle_copy(tmp_path / "bundle")
    split = tmp_path / "data" / "valid"
    shutil.copytree(SAMPLE_SPLIT, split)
    before = _tree(tmp_path)
    cases = [
        (["segment", str(split), "--output-dir", str(bundle / "models")], "inside the bundle's models folder"),
        (["segment", str(split), "--output-dir", str(bundle)], "holds the bundle's configs folder"),
        (["evaluate", str(split), "--output-dir", str(bundle / "scripts" / "x")], "inside the bundle's scripts folder"),
        (["evaluate", str(split), "--output-dir", str(split.parent)], f"holds the input {split}"),
    ]
    for argv, said in cases:
        assert main([*argv, "--bundle-dir", str(bundle)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
    assert _tree(tmp_path) == before


def test_split_makers_refuse_an_output_in_or_above_what_they_read(tmp_path):
    from scripts.tumor_free import write_tumor_free_split, write_volume_tumor_free_split

    split = tmp_path / "valid"
    shutil.copytree(SAMPLE_SPLIT, split)
    volume, mask = tmp_path / "cases" / "case.nii.gz", tmp_path / "masks" / "case.nii.gz"
    for path in (volume, mask):
        path.parent.mkdir()
        itk.imwrite(itk.image_from_array(np.zeros((4, 8, 8), np.float32)), str(path))
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=r"free: inside the source split"):
        write_tumor_free_split(split, split / "free")
    with pytest.raises(ValueError, match=r"holds the source split"):
        write_tumor_free_split(split, tmp_path)
    with pytest.raises(ValueError, match=r"cases: holds the volume .*case.nii.gz"):
        write_volume_tumor_free_split([(volume, mask)], volume.parent)
    assert _tree(tmp_path) == before


def _bundle_run(config: str, *args: str):
    return run_bundle("--config_file", config, *args, cwd=BUNDLE)


def test_bundle_inference_refuses_an_output_dir_above_its_dataset_and_leaves_the_users_file(tmp_path):
    """The reported loss: ``output_dir`` the parent of ``dataset_dir`` wrote ``scan.png`` over the user's own."""
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], cases / "scan.jpg")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "scan.png")  # the user's file
    before = _tree(tmp_path)
    proc = _bundle_run(
        str(BUNDLE / "configs" / "inference.json"), "--dataset_dir", str(cases), "--output_dir", str(tmp_path)
    )
    assert proc.returncode != 0
    assert f"output_dir {tmp_path}: holds the input dataset_dir {cases}" in proc.stderr.strip().splitlines()[-1]
    assert _tree(tmp_path) == before


def test_bundle_inference_refuses_an_output_dir_in_the_bundles_models(tmp_path):
    bundle = _bundle_copy(tmp_path / "bundle")
    proc = run_bundle(
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--bundle_root",
        str(bundle),
        "--output_dir",
        str(bundle / "models"),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert f"output_dir {bundle / 'models'}: inside the bundle's models folder" in proc.stderr
    assert list((bundle / "models").iterdir()) == []


@pytest.mark.parametrize(
    "configs, where, said",
    [
        ("train", {"output_dir": "data/eval"}, "output_dir {t}/data/eval: inside dataset_dir {t}/data"),
        ("train", {"ckpt_dir": "elsewhere/models"}, "ckpt_dir {t}/elsewhere/models: inside train_split {t}/elsewhere"),
        ("train", {"output_dir": "."}, "output_dir {t}: holds the input dataset_dir {t}/data"),
        ("evaluate", {"output_dir": "data"}, "output_dir {t}/data: holds the input val_split {t}/data/valid"),
    ],
)
def test_bundle_train_and_evaluate_refuse_outputs_in_or_above_their_data(tmp_path, configs, where, said):
    data = _dataset(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"  # a split outside dataset_dir: train_split an absolute path
    shutil.copytree(SAMPLE_SPLIT, elsewhere)
    files = ["configs/train.json", str(SMOKE_NETWORK), str(CONFIGS / "smoke_cpu.json")]
    if configs == "evaluate":
        files.insert(1, "configs/evaluate.json")
    dirs = {"output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models")}
    dirs.update({k: os.path.normpath(tmp_path / v) for k, v in where.items()})
    before = _tree(tmp_path)
    args = [f"--{k}={v}" for k, v in dirs.items()]
    proc = _bundle_run(str(files), "--dataset_dir", str(data), "--train_split", str(elsewhere), *args)
    assert proc.returncode != 0
    assert said.format(t=tmp_path) in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------- interrupted runs


def _as_from_a_terminal() -> None:
    """SIGINT's default disposition in the child, as a terminal gives it: a suite started in the background
    (``pytest ... &`` in a script) inherits SIGINT ignored, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "brainseg_monai.cli", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
        **kwargs,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240.0, step: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(step)


def _larger_split(dst: Path, copies: int) -> Path:
    """The sample split with each image ``copies`` times (own names and annotations): a longer evaluation."""
    shutil.copytree(SAMPLE_SPLIT, dst)
    coco = json.loads((dst / "_annotations.coco.json").read_text())
    images, annotations = list(coco["images"]), list(coco["annotations"])
    for k in range(1, copies):
        for im in coco["images"]:
            name = f"copy{k}_{im['file_name']}"
            shutil.copy(dst / im["file_name"], dst / name)
            images.append({**im, "id": im["id"] + 1000 * k, "file_name": name})
        annotations += [
            {**a, "id": a["id"] + 1000 * k, "image_id": a["image_id"] + 1000 * k} for a in coco["annotations"]
        ]
    (dst / "_annotations.coco.json").write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    return dst


def _evaluate_argv(smoke_model: Path, split: Path, out: Path) -> list[str]:
    common = ["--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]
    return ["evaluate", str(split), "--output-dir", str(out), "--overlays", *common]


def _staging(out: Path) -> list[Path]:
    return list(out.glob(".evaluation.*"))


def test_evaluate_stopped_by_sigterm_leaves_no_temporary_files_and_the_earlier_results(smoke_model, tmp_path):
    split = _larger_split(tmp_path / "valid", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics_summary.json").write_text('{"from": "the earlier run"}')
    before = _tree(out)
    proc = _cli(*_evaluate_argv(smoke_model, split, out))
    _wait_for(lambda: any((s / "masks").is_dir() for s in _staging(out)), proc)
    _wait_for(lambda: any(any((s / "masks").iterdir()) for s in _staging(out)), proc)  # masks being written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "brainseg: terminated" in err
    assert _tree(out) == before, "no temporary folder, no new file, the earlier summary untouched"


def test_evaluate_stopped_by_ctrl_c_leaves_no_summary_that_looks_finished(smoke_model, tmp_path):
    """Ctrl-C after the metrics are computed, while the overlays are drawn: no metrics_summary.json appears."""
    split = _larger_split(tmp_path / "valid", 6)  # 72 overlays to draw: the signal lands while they are drawn

    def drawing_overlays() -> bool:
        staged = _staging(out) if out.is_dir() else []
        return any((s / "metrics_summary.json").is_file() and any(s.glob("overlays/*.png")) for s in staged)

    out = tmp_path / "out"
    proc = _cli(*_evaluate_argv(smoke_model, split, out))
    _wait_for(drawing_overlays, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "brainseg: interrupted" in err, err[-3000:]
    assert list(out.iterdir()) == []


def test_evaluate_refuses_to_replace_mask_folders_that_hold_a_persons_files(smoke_model, tmp_path, capsys):
    """masks/ and overlays/ are replaced whole by each evaluation: one holding a file no evaluation wrote (notes, a
    corrected mask under its own name) stops the run before any work; the earlier evaluation's own files do not."""
    out = tmp_path / "out"
    argv = _evaluate_argv(smoke_model, SAMPLE_SPLIT, out)
    assert main(argv) == 0
    capsys.readouterr()
    (out / "masks" / "notes.txt").write_text("my notes")
    (out / "overlays" / "corrected_case.png").write_bytes(b"not ours")
    (out / "overlays" / "subfolder").mkdir()
    before = _tree(out)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"brainseg evaluate: error: {out / 'masks'} holds 1 file that no evaluation wrote there (notes.txt); each "
        "evaluation replaces masks/ whole: move them or choose another output folder; nothing was evaluated"
    )
    assert _tree(out) == before
    (out / "masks" / "notes.txt").unlink()
    assert main(argv) == 1
    assert f"{out / 'overlays'} holds 2 files that no evaluation wrote there (corrected_case.png, subfolder)" in (
        capsys.readouterr().err
    )
    assert main(argv[:4] + argv[5:]) == 0  # without --overlays, overlays/ is not replaced: it is not looked at
    assert (out / "overlays" / "corrected_case.png").read_bytes() == b"not ours"
    (out / "masks" / ".DS_Store").write_bytes(b"Finder")  # what an operating system leaves is no one's work
    check_replaced_folders(out)


def test_train_stopped_by_sigterm_while_caching_its_data_ends_without_reading_the_data_again(tmp_path):
    """SIGTERM while the training images are cached: the run ends at once. It used to finalize the workflow
    before the trainer existed, which built the validator and cached every image again before exiting."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        _larger_split(data / split, 10)  # 120 images each
    calls = tmp_path / "hook_calls.txt"
    chain = json.loads((BUNDLE / "configs" / "train.json").read_text())["train"]["deterministic_transforms"]
    hook = tmp_path / "sigterm_while_caching.json"
    hook.write_text(
        json.dumps(
            {
                "hook_calls": str(calls),
                # one "x" per image read; the third sends the run SIGTERM, as a user's kill would (test code)
                "sigterm_hook": {
                    "_target_": "Lambda",
                    "func": "$lambda d: [open(@hook_calls, 'a').write('x'), "
                    "os.kill(os.getpid(), 15) if os.path.getsize(@hook_calls) == 3 else None] and d",
                },
                "train#deterministic_transforms": "$[@sigterm_hook] + " + chain.lstrip("$"),
            }
        )
    )
    out = tmp_path / "run"
    argv = ["train", "--dataset-dir", str(data), "--output-dir", str(out), "--epochs", "1", "--device", "cpu"]
    proc = _cli(*argv, "--config", str(SMOKE_NETWORK), "--config", str(hook))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "brainseg: terminated" in err, err[-2000:]
    assert len(calls.read_text()) <= 5, "images read after the signal: the datasets were built again"
    assert not (out / "models" / "model.pt").exists()


def _small_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    samples = [Image.open(f).convert("L").resize((96, 96)) for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))]
    paths = [folder / f"img_{k:03d}.png" for k in range(n)]
    for k, path in enumerate(paths):
        samples[k % len(samples)].save(path)
    return paths


def _segment_argv(smoke_model: Path, out: Path, *inputs: Path) -> list[str]:
    common = ["--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]
    return ["segment", *map(str, inputs), "--output-dir", str(out), "--overlays", *common]


def _report_names(out: Path) -> list[str]:
    with open(out / "tumor_report.csv", newline="", encoding="utf-8") as f:
        return sorted(row["file_name"] for row in csv.DictReader(f))


def test_segment_stopped_by_sigterm_then_rerun_with_skip_existing_completes_every_input(smoke_model, tmp_path, capsys):
    images = _small_images(tmp_path / "images", 40)
    out = tmp_path / "out"
    proc = _cli(*_segment_argv(smoke_model, out, images[0].parent))
    written = []
    while len(written) < 3:  # stop it mid-run, masks streaming out
        line = proc.stdout.readline()
        assert line, proc.communicate()[1][-2000:]
        written.append(line.strip())
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "brainseg: terminated" in err
    masks = sorted(p.name for p in out.glob("*.png"))
    assert len(masks) < 40 and _hidden(out) == [], "no temporary file left"
    # the report lists the masks written before the stop, and only them
    assert [n.replace(".png", "") for n in _report_names(out)] == [m.replace(".png", "") for m in masks]

    assert main([*_segment_argv(smoke_model, out, images[0].parent), "--skip-existing"]) == 0
    captured = capsys.readouterr()
    done = {p.name for p in out.glob("*.png") if p.name in masks and (out / "overlays" / p.name).is_file()}
    assert f"{len(done)} already done (--skip-existing)" in captured.err
    assert sorted(Path(line).name for line in captured.out.splitlines()) == sorted(
        f"img_{k:03d}.png" for k in range(40) if f"img_{k:03d}.png" not in done
    )
    assert _report_names(out) == sorted(p.name for p in images), "the report lists every input"
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(p.name for p in images)
    assert _hidden(out) == []


def test_skip_existing_redoes_an_input_whose_overlay_or_report_row_is_missing(smoke_model, tmp_path, capsys):
    images = _small_images(tmp_path / "images", 4)
    out = tmp_path / "out"
    assert main(_segment_argv(smoke_model, out, *images[:3])) == 0
    capsys.readouterr()
    (out / "overlays" / "img_000.png").unlink()  # its overlay is missing
    with open(out / "tumor_report.csv", encoding="utf-8") as f:  # its row is missing
        lines = [line for line in f if not line.startswith("img_001.png,")]
    (out / "tumor_report.csv").write_text("".join(lines), encoding="utf-8")
    kept = (out / "img_002.png").stat().st_mtime_ns
    assert main([*_segment_argv(smoke_model, out, *images), "--skip-existing"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out / f"img_00{k}.png") for k in (0, 1, 3)]
    assert "segmented 3 of 4 image(s)" in captured.err and "1 already done" in captured.err
    assert (out / "img_002.png").stat().st_mtime_ns == kept
    assert _report_names(out) == [p.name for p in images]
    assert (out / "overlays" / "img_000.png").is_file()


def test_skip_existing_redoes_a_volume_whose_per_slice_report_is_missing(smoke_model, tmp_path, capsys):
    images = _small_images(tmp_path / "images", 3)
    volume = tmp_path / "case.nii.gz"
    write_volume(
        volume, np.stack([np.asarray(Image.open(p), np.float32) for p in images]), [1, 1, 3], [0, 0, 0], np.eye(3)
    )
    out = tmp_path / "out"
    assert main(_segment_argv(smoke_model, out, volume)) == 0
    assert main([*_segment_argv(smoke_model, out, volume), "--skip-existing"]) == 0
    assert "1 already done" in capsys.readouterr().err  # mask, overlays, row and per-slice report: all there
    (out / "case_slices.csv").unlink()
    assert main([*_segment_argv(smoke_model, out, volume), "--skip-existing"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "case.nii.gz")]  # segmented again
    with open(out / "case_slices.csv", newline="", encoding="utf-8") as f:
        assert [row["slice"] for row in csv.DictReader(f)] == ["0", "1", "2"]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_later_run_removes_the_temporary_files_a_killed_one_left_and_keeps_a_running_ones(tmp_path, capsys):
    """A run killed outright (SIGKILL) leaves its temporary files; the next write into the folder removes them."""
    bundle = _bundle_copy(tmp_path / "bundle")
    for name in ("input_reference.json", "sequence_check.pt"):  # bundle files packaged too
        shutil.copy(BUNDLE / "models" / name, bundle / "models")
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    running = subprocess.Popen(["sleep", "60"])
    try:
        stale = [out / f".brain_tumor_mri_2d_segm.k2j4m9x1~{dead}.zip", out / f".scan.png.abcdefgh~{dead}.png"]
        for path in stale:
            path.write_bytes(b"half a file")
        (out / f".masks.q7w8e9r0~{dead}").mkdir()
        (out / f".masks.q7w8e9r0~{dead}" / "a.png").write_bytes(b"x")
        live = out / f".summary.json.zxcvbnm1~{running.pid}.json"
        live.write_bytes(b"being written")
        (out / ".user_notes").write_text("mine")
        assert main(["package", "--bundle-dir", str(bundle), "--output", str(out), "--allow-no-weights"]) == 0
        capsys.readouterr()
        assert sorted(p.name for p in out.iterdir()) == sorted([live.name, ".user_notes", next(out.glob("*.zip")).name])
    finally:
        running.kill()
        running.wait()


def test_atomic_output_names_its_temporary_file_after_its_process(tmp_path):
    with atomic_output(tmp_path / "report.csv") as tmp:
        name = os.path.basename(tmp)
        assert name.startswith(".report.csv.") and name.endswith(f"~{os.getpid()}.csv")
        Path(tmp).write_text("a")
    assert (tmp_path / "report.csv").read_text() == "a" and _hidden(tmp_path) == []
