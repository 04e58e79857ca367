"""Unsafe files: pickled code in checkpoints, file_name traversal, bundle zips.

A crafted checkpoint whose pickle would create a marker file is refused by every loader
(``BundlePredictor``, ``brainseg segment --model``, the bundle's ``--ckpt_path`` and
``--resume``) and the marker never appears. A COCO ``file_name`` pointing outside the split
stops ``brainseg train`` before anything outside is read. A bundle zip is unpacked only when
its sha256 matches, and never outside the target folder.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE, CONFIGS, SAMPLE_SPLIT, SMOKE_NETWORK, smoke_train_argv

from brainseg_monai.cli import main

REPO = BUNDLE.parent
SMOKE_TRAIN = f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']"


class _CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is trusted."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, like_training_state: bool = False) -> Path:
    payload = {"weight": torch.zeros(2), "extra": _CreatesMarker(marker)}
    obj = {"model": payload, "optimizer": {}, "trainer": {"epoch": 1}} if like_training_state else payload
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=BUNDLE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


REFUSED = (
    "refused: not a plain weights file, its pickle calls code (torch.load weights_only=True)"
    " [Unsupported global: GLOBAL io.open]"
)


# --------------------------------------------------------------------------- checkpoints with pickled code


def test_the_crafted_checkpoint_really_runs_code_when_trusted(tmp_path):
    """The control: loaded the unsafe way (weights_only=False, in a throwaway process) it creates its marker."""
    marker = tmp_path / "control_marker"
    ckpt = _evil_checkpoint(tmp_path / "control.pt", marker)
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(ckpt)!r}, weights_only=False)"], check=True, timeout=120
    )
    assert marker.exists()


def test_bundle_predictor_refuses_pickled_code(tmp_path):
    from scripts.predictor import BundlePredictor

    marker = tmp_path / "marker"
    ckpt = _evil_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(ValueError) as info:
        BundlePredictor(ckpt_path=ckpt, device="cpu", config_files=[SMOKE_NETWORK])
    assert str(info.value) == f"{ckpt}: {REFUSED}"
    assert not marker.exists()


def test_segment_model_refuses_pickled_code(tmp_path, capsys):
    marker = tmp_path / "marker"
    ckpt = _evil_checkpoint(tmp_path / "model.pt", marker)
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(SAMPLE_SPLIT),
                "--output-dir",
                str(out),
                "--model",
                str(ckpt),
                "--config",
                str(SMOKE_NETWORK),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.strip() == f"brainseg segment: error: {ckpt}: {REFUSED}"
    assert not marker.exists() and list(out.iterdir()) == []


def test_bundle_inference_ckpt_path_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _evil_checkpoint(tmp_path / "model.pt", marker)
    out = tmp_path / "masks"
    proc = _bundle(
        "--config_file",
        f"['configs/inference.json','{SMOKE_NETWORK}']",
        "--ckpt_path",
        str(ckpt),
        "--output_dir",
        str(out),
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr) == [f"error: {ckpt}: {REFUSED}"]
    assert not marker.exists() and not out.exists()


def test_bundle_resume_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _evil_checkpoint(tmp_path / "models" / "checkpoint_latest.pt", marker, like_training_state=True)
    proc = _bundle(
        "--config_file",
        SMOKE_TRAIN,
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--resume",
        "true",
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr) == [f"error: {ckpt}: {REFUSED}"]
    assert not marker.exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.name != ".training.lock") == [
        "checkpoint_latest.pt"
    ]  # nothing trained


def _torch_load_calls(path: Path) -> list[tuple[int, bool]]:
    """(line, has weights_only=True) for each ``torch.load(...)`` call in a Python file."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and getattr(node.func.value, "id", "") == "torch"
        ):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            calls.append((node.lineno, safe))
    return calls


def test_every_checkpoint_load_is_weights_only():
    import monai.handlers.checkpoint_loader as monai_loader

    files = [
        *sorted((REPO / "brainseg_monai").glob("*.py")),
        *sorted((REPO / "slicer_extension").rglob("*.py")),
        Path(monai_loader.__file__),
    ]
    found = {f: _torch_load_calls(f) for f in files}
    assert found[Path(monai_loader.__file__)] and all(safe for _, safe in found[Path(monai_loader.__file__)])
    unsafe = [f"{f}:{line}" for f, calls in found.items() for line, safe in calls if not safe]
    assert unsafe == []

    # and the bundle's configs load checkpoints only through loaders that use it
    def targets(node):
        if isinstance(node, dict):
            yield from ([node["_target_"]] if "_target_" in node else [])
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    for config in (BUNDLE / "configs").glob("*.json"):
        assert "torch.load" not in config.read_text(), config
        loaders = [t for t in targets(json.loads(config.read_text())) if "CheckpointLoader" in t]
        assert set(loaders) <= {"CheckpointLoader", "scripts.handlers.SafeCheckpointLoader"}, config


# --------------------------------------------------------------------------- file_name traversal


AUDIT_SCRIPT = r"""
import json, sys
outside = sys.argv[1]
touched = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        path = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if path.startswith(outside):
            touched.append([event, path])
sys.addaudithook(hook)
from brainseg_monai.cli import main
code = main(sys.argv[2:])
print(json.dumps({"code": code, "touched": touched}))
"""


def test_train_refuses_file_name_traversal_and_reads_nothing_outside(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], secret / "outside.jpg")  # a real, readable image
    root = tmp_path / "dataset"
    shutil.copytree(SAMPLE_SPLIT, root / "train")
    shutil.copytree(SAMPLE_SPLIT, root / "valid")
    coco = json.loads((root / "train" / "_annotations.coco.json").read_text())
    coco["images"][0]["file_name"] = "../../secret/outside.jpg"
    coco["images"][1]["file_name"] = str(secret / "outside.jpg")
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT, str(secret), *smoke_train_argv(root, out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 1, "touched": []}  # refused, and nothing outside the split was opened or listed
    assert "Traceback" not in proc.stderr
    for iid, name in ((56, "../../secret/outside.jpg"), (coco["images"][1]["id"], str(secret / "outside.jpg"))):
        assert f"images[id={iid}].file_name: {name!r} is absolute or escapes the split folder: refused" in proc.stderr
    assert "training not started" in proc.stderr and not out.exists()


def test_symlink_that_escapes_the_split_is_refused(sample_split, tmp_path, capsys):
    outside = tmp_path / "outside.jpg"
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], outside)
    coco = json.loads((sample_split / "_annotations.coco.json").read_text())
    (sample_split / "link.jpg").symlink_to(outside)
    coco["images"][0]["file_name"] = "link.jpg"
    (sample_split / "_annotations.coco.json").write_text(json.dumps(coco))
    assert main(["check-data", str(sample_split)]) == 1
    assert (
        "images[id=56].file_name: 'link.jpg' is absolute or escapes the split folder: refused"
        in capsys.readouterr().err
    )


# --------------------------------------------------------------------------- bundle zips


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle_zip(path: Path, extra: dict | None = None, link: str | None = None) -> Path:
    """A zip of the shipped bundle's configs, input checks' files and LICENSE under ``bundle/``, plus crafted members."""
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted((BUNDLE / "configs").glob("*")):
            zf.write(f, f"bundle/configs/{f.name}")
        zf.write(BUNDLE / "models" / "input_reference.json", "bundle/models/input_reference.json")
        zf.write(BUNDLE / "models" / "sequence_check.pt", "bundle/models/sequence_check.pt")
        zf.write(BUNDLE / "LICENSE", "bundle/LICENSE")
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
        if link:
            info = zipfile.ZipInfo("bundle/configs/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link)
    return path


def test_unpack_a_good_bundle_zip(tmp_path, capsys):
    z = _bundle_zip(tmp_path / "b.zip")
    dest = tmp_path / "dest"
    assert main(["unpack", str(z), "--dest", str(dest), "--sha256", _sha(z).upper()]) == 0
    assert capsys.readouterr().out.strip() == str(dest / "bundle")
    assert (dest / "bundle" / "configs" / "inference.json").read_bytes() == (
        BUNDLE / "configs" / "inference.json"
    ).read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_unpack_extracts_the_bytes_it_checked_even_if_the_file_is_swapped(tmp_path, monkeypatch):
    """No check-then-reopen race: the zip is swapped for another right after its hash is taken."""
    from brainseg_monai import bundle_zip

    good = _bundle_zip(tmp_path / "b.zip")
    evil = _bundle_zip(tmp_path / "evil.zip", extra={"bundle/configs/evil.json": "{}"})
    hashed = bundle_zip._copy_and_hash

    def hash_then_swap(src, dst):
        digest = hashed(src, dst)
        shutil.copy(evil, src)  # the attacker wins the race on the path
        return digest

    monkeypatch.setattr(bundle_zip, "_copy_and_hash", hash_then_swap)
    root = bundle_zip.unpack_bundle(good, tmp_path / "dest", _sha(good))
    assert (root / "configs" / "inference.json").is_file()
    assert not (root / "configs" / "evil.json").exists(), "unpacked a zip other than the one checked"


def test_unpack_refuses_a_zip_whose_sha256_differs(tmp_path, capsys):
    z = _bundle_zip(tmp_path / "b.zip")
    wrong = hashlib.sha256(b"another zip").hexdigest()
    dest = tmp_path / "dest"
    assert main(["unpack", str(z), "--dest", str(dest), "--sha256", wrong]) == 1
    line = capsys.readouterr().err.strip()
    assert (
        line == f"brainseg unpack: error: {z}: sha256 is {_sha(z)}, not the expected {wrong}: refused, nothing unpacked"
    )
    assert not dest.exists()


@pytest.mark.parametrize("sha", ["", "abc", "g" * 64], ids=["empty", "short", "not-hex"])
def test_unpack_refuses_a_malformed_sha256(tmp_path, capsys, sha):
    z = _bundle_zip(tmp_path / "b.zip")
    assert main(["unpack", str(z), "--dest", str(tmp_path / "dest"), "--sha256", sha]) == 1
    assert "expected 64 hexadecimal digits" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("kind", ["dotdot", "nested-dotdot", "absolute", "backslash-dotdot", "symlink"])
def test_unpack_refuses_members_that_would_land_outside(tmp_path, capsys, kind):
    target = tmp_path / "evil.txt"
    name = {
        "dotdot": "../evil.txt",
        "nested-dotdot": "bundle/configs/../../../evil.txt",
        "absolute": str(target),
        "backslash-dotdot": "..\\evil.txt",
        "symlink": None,
    }[kind]
    z = _bundle_zip(
        tmp_path / "b.zip", extra={name: b"pwned"} if name else None, link=str(target) if not name else None
    )
    with zipfile.ZipFile(z) as zf:  # the crafted name is really in the zip
        assert (name or "bundle/configs/link") in zf.namelist()
    dest = tmp_path / "deep" / "dest"
    assert main(["unpack", str(z), "--dest", str(dest), "--sha256", _sha(z)]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"brainseg unpack: error: {z}: member ") and line.endswith(": refused, nothing unpacked")
    assert not target.exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not dest.exists() and not list(tmp_path.rglob("evil.txt"))


def test_unpack_refuses_a_non_empty_destination_and_a_non_bundle(tmp_path, capsys):
    z = _bundle_zip(tmp_path / "b.zip")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    assert main(["unpack", str(z), "--dest", str(dest), "--sha256", _sha(z)]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "not a bundle")
    assert main(["unpack", str(other), "--dest", str(tmp_path / "d2"), "--sha256", _sha(other)]) == 1
    assert "not a MONAI bundle" in capsys.readouterr().err
    assert not (tmp_path / "d2").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_segment_with_a_bundle_zip_checks_its_sha256_first(smoke_model, tmp_path, capsys):
    z = _bundle_zip(tmp_path / "b.zip")
    image = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    out = tmp_path / "out"
    common = [
        "segment",
        str(image),
        "--output-dir",
        str(out),
        "--bundle-zip",
        str(z),
        "--model",
        str(smoke_model),
        "--config",
        str(SMOKE_NETWORK),
        "--device",
        "cpu",
    ]
    assert main(common + ["--sha256", "0" * 64]) == 1
    assert "refused, nothing unpacked" in capsys.readouterr().err and not out.exists()
    assert main(common) == 1
    assert "--bundle-zip needs --sha256" in capsys.readouterr().err
    assert main(common + ["--sha256", _sha(z)]) == 0
    assert capsys.readouterr().out.strip() == str(out / (image.stem + ".png"))


# --------------------------------------------------------------------------- user text never becomes code

INJECTIONS = [
    "cpu') if __import__('os').system('touch {marker}') else torch.device('cpu",
    "$__import__('os').system('touch {marker}')",
    "@__import__('os').system('touch {marker}')",
]


@pytest.mark.parametrize("command", ["train", "evaluate", "segment"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_device_text_is_validated_never_evaluated(command, payload, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    device = payload.format(marker=marker)
    base = {
        "train": ["train", "--dataset-dir", str(SAMPLE_SPLIT.parent), "--output-dir", str(tmp_path / "run")]
        + ["--train-split", "valid", "--val-split", "valid", "--epochs", "1"],
        "evaluate": ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(tmp_path / "eval")],
        "segment": ["segment", str(next(SAMPLE_SPLIT.glob("*.jpg"))), "--output-dir", str(tmp_path / "seg")],
    }[command]
    assert main([*base, "--device", device]) != 0
    assert not marker.exists(), "the device text ran as code"
    err = capsys.readouterr().err
    assert "--device" in err and "not a device" in err


@pytest.mark.parametrize("option", ["--train-split", "--val-split"])
@pytest.mark.parametrize("payload", INJECTIONS[1:] + ["%configs/inference.json::device"])
def test_train_options_that_reach_the_config_cannot_be_expressions(option, payload, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    args = ["train", "--dataset-dir", str(SAMPLE_SPLIT.parent), "--output-dir", str(tmp_path / "run"), "--epochs", "1"]
    args += ["--train-split", "valid", "--val-split", "valid", option, payload.format(marker=marker)]
    assert main(args) != 0
    assert not marker.exists() and not (tmp_path / "run").exists()
    assert option in capsys.readouterr().err


def test_category_map_labels_must_be_integers(tmp_path, capsys):
    args = ["check-data", str(SAMPLE_SPLIT), "--category-map", '{"Tumor": "$__import__(\\"os\\").getcwd()"}']
    assert main(args) != 0
    assert "--category-map" in capsys.readouterr().err


def test_bundle_predictor_takes_a_device_object_not_text():
    from scripts.predictor import BundlePredictor

    with pytest.raises((RuntimeError, ValueError)):
        BundlePredictor(device="cpu') if __import__('os').system('true') else torch.device('cpu")


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "x.jpg", "--output-dir", "{out}", "--batch-size", "0"],
        ["segment", "x.jpg", "--output-dir", "{out}", "--batch-size", "-3"],
        ["segment", "x.jpg", "--output-dir", "{out}", "--batch-size", "two"],
        ["train", "--dataset-dir", "d", "--output-dir", "{out}", "--epochs", "0"],
        ["train", "--dataset-dir", "d", "--output-dir", "{out}", "--epochs", "-1"],
    ],
)
def test_numeric_options_are_checked_before_anything_runs(argv, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(out=out) for a in argv])
    assert exit_info.value.code == 2
    option = argv[-2]
    assert f"argument {option}" in capsys.readouterr().err
    assert not out.exists(), "nothing is written for a refused option"


# --------------------------------------------------------------------------- bounded reads, detached headers, bombs


def test_annotation_file_that_never_ends_is_refused_by_name(sample_split, capsys):
    ann = sample_split / "_annotations.coco.json"
    ann.unlink()
    ann.symlink_to("/dev/zero")
    assert main(["check-data", str(sample_split)]) == 1
    captured = capsys.readouterr()
    assert f"{ann}" in captured.out + captured.err and "not a regular file" in captured.out + captured.err
    from scripts.coco import CocoDataError, load_coco_json

    with pytest.raises(CocoDataError, match="not a regular file"):
        load_coco_json(ann)
    ann.unlink()
    os.mkfifo(ann)  # a FIFO with no writer: must not hang
    with pytest.raises(CocoDataError, match="not a regular file"):
        load_coco_json(ann)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    from PIL import Image

    from scripts.io import MAX_PIXELS, read_grey

    bomb = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(bomb, optimize=True)  # about 100 kB on disk, 900 M pixels
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ValueError, match=f"{bomb}: over the limit of {MAX_PIXELS} pixels"):
        read_grey(bomb)
    big = tmp_path / "big.png"
    Image.new("L", (12000, 9000)).save(big)  # under PIL's own bomb error, over the limit
    with pytest.raises(ValueError, match=f"{big}: 12000x9000 = 108000000 pixels, over the limit"):
        read_grey(big)


@pytest.mark.parametrize(
    "name, header",
    [
        (
            "abs.mhd",
            "ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = {secret}\n",
        ),
        ("up.nhdr", "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\ndata file: ../secret.raw\n"),
        ("dev.nhdr", "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\ndatafile: /dev/zero\n"),
    ],
)
def test_detached_headers_may_not_read_files_outside_their_folder(tmp_path, name, header, capsys):
    from scripts.io import read_medical_image

    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(16)))
    folder = tmp_path / "scans"
    folder.mkdir()
    path = folder / name
    path.write_text(header.format(secret=secret))
    with pytest.raises(ValueError, match="outside the header's folder"):
        read_medical_image(path)
    assert main(["segment", str(path), "--output-dir", str(tmp_path / "out"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {path}:" in err and "outside the header's folder" in err


def test_a_huge_declared_volume_is_refused_before_reading(tmp_path):
    from scripts.io import read_medical_image

    header = tmp_path / "zero.mhd"
    (tmp_path / "zero.raw").write_bytes(b"")
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100\nElementType = MET_FLOAT\n"
        "ElementDataFile = zero.raw\n"
    )
    with pytest.raises(ValueError, match="100000x100000x100 = 1000000000000 pixels, over the limit"):
        read_medical_image(header)


def test_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch, capsys):
    """A zip declaring more than MAX_UNPACKED_BYTES is refused from its directory, and the streaming
    extraction stops at the limit even when the directory lies about the sizes."""
    from brainseg_monai import bundle_zip

    assert bundle_zip.MAX_UNPACKED_BYTES == 4 * 2**30  # the policy: a bundle is tens of MB
    monkeypatch.setattr(bundle_zip, "MAX_UNPACKED_BYTES", 1_000_000)  # the same code path, a small limit
    bomb = _bundle_zip(tmp_path / "bomb.zip", extra={"bundle/models/zeros.bin": b"\0" * 2_000_000})
    with zipfile.ZipFile(bomb) as zf:
        declared = sum(info.file_size for info in zf.infolist())
    dest = tmp_path / "dest"
    message = f"would unpack to {declared / 2**20:.2f} MiB, over the limit of 0.95 MiB: refused, nothing unpacked"
    with pytest.raises(bundle_zip.BundleZipError, match=re.escape(message)):
        bundle_zip.unpack_bundle(bomb, dest, _sha(bomb))
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with zipfile.ZipFile(bomb) as zf:
        with pytest.raises(bundle_zip.BundleZipError, match=re.escape("unpacks to more than 0.95 MiB: refused")):
            bundle_zip._extract(zf, tmp_path / "stream")  # the check that does not trust the directory
    # one byte over the limit is refused by both checks; exactly at the limit unpacks
    monkeypatch.setattr(bundle_zip, "MAX_UNPACKED_BYTES", declared - 1)
    with pytest.raises(bundle_zip.BundleZipError, match="would unpack to"):
        bundle_zip.unpack_bundle(bomb, dest, _sha(bomb))
    with zipfile.ZipFile(bomb) as zf:
        with pytest.raises(bundle_zip.BundleZipError, match="unpacks to more than"):
            bundle_zip._extract(zf, tmp_path / "stream_over")
    monkeypatch.setattr(bundle_zip, "MAX_UNPACKED_BYTES", declared)
    assert bundle_zip.unpack_bundle(bomb, dest, _sha(bomb)).is_dir()
    sizes = {
        4 * 2**30: "4.0 GiB",
        3 * 2**29: "1.5 GiB",
        2**30: "1.0 GiB",
        2**30 - 2**20: "1023.00 MiB",
        3 * 2**19: "1.50 MiB",
    }
    assert {n: bundle_zip._size(n) for n in sizes} == sizes


def test_weights_of_another_network_are_named_with_the_config_that_fits(smoke_model, tmp_path, capsys):
    """Not just 'Error(s) in loading state_dict': which tensors differ, with their shapes, and a config that fits."""
    image = next(SAMPLE_SPLIT.glob("*.jpg"))
    out = tmp_path / "out"
    assert main(["segment", str(image), "--output-dir", str(out), "--model", str(smoke_model), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(smoke_model) in err
    assert "tensor(s) differ in shape" in err and "file [8, 1, 3, 3], network [16, 1, 3, 3]" in err
    assert f"--config {SMOKE_NETWORK} fits them" in err
    shipped = BUNDLE / "models" / "model.pt"
    if shipped.is_file():
        args = ["segment", str(image), "--output-dir", str(out), "--config", str(SMOKE_NETWORK), "--device", "cpu"]
        assert main(args) == 1
        assert "the bundle's own network fits them: leave out --config" in capsys.readouterr().err


def test_bundle_zip_edge_cases_each_refused_with_its_own_reason(tmp_path):
    """Cases found by mutation testing (benchmarks/mutation/bundle_zip.toml): each check must give its
    own answer, not merely some refusal."""
    from brainseg_monai import bundle_zip

    def member(name, mode, data=b"x"):
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        return info, data

    def crafted(name, *members, top="bundle"):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{top}/configs/", b"")  # a directory entry first: the files after it still unpack
            zf.writestr(f"{top}/configs/nested/", b"")
            zf.write(BUNDLE / "configs" / "inference.json", f"{top}/configs/inference.json")
            zf.writestr(f"{top}/configs/nested/deep.json", b"{}")
            zf.writestr(f"{top}/", b"")  # a directory entry for a folder its files already made
            for info, data in members:
                zf.writestr(info, data)
        return path

    def refused(path, reason, dest=None):
        with pytest.raises(bundle_zip.BundleZipError, match=re.escape(reason)):
            bundle_zip.unpack_bundle(path, dest or tmp_path / "never", _sha(path))
        assert not (tmp_path / "never").exists()

    refused(crafted("link.zip", member("bundle/l", stat.S_IFLNK | 0o777)), "member 'bundle/l' is a symbolic link")
    refused(crafted("fifo.zip", member("bundle/f", stat.S_IFIFO | 0o644)), "is not a regular file or folder")
    refused(crafted("sock.zip", member("bundle/s", stat.S_IFSOCK | 0o644)), "member 'bundle/s' is not a regular file")
    good = crafted("good.zip", member("bundle/models/w.bin", stat.S_IFREG | 0o644))
    root = bundle_zip.unpack_bundle(good, tmp_path / "a" / "b" / "dest", _sha(good))  # missing parents are made
    assert root == tmp_path / "a" / "b" / "dest" / "bundle"
    assert (root / "configs" / "nested" / "deep.json").read_bytes() == b"{}" and (root / "models" / "w.bin").is_file()

    for wrong in ("f" * 64, "0" * 64):  # above and below the real hash: any difference is refused
        with pytest.raises(bundle_zip.BundleZipError, match="sha256 is .* not the expected"):
            bundle_zip.unpack_bundle(good, tmp_path / "never", wrong)
    not_a_zip = tmp_path / "not.zip"
    not_a_zip.write_bytes(b"PK but not really a zip file")
    refused(not_a_zip, "not a zip file")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    refused(good, "already exists and is not an empty folder", dest=a_file)
    assert a_file.read_text() == "mine"
    # the bundle is the one top-level folder holding configs/; two of them, or none, is not a bundle
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        for top in ("first", "second"):
            zf.write(BUNDLE / "configs" / "inference.json", f"{top}/configs/inference.json")
    refused(two, "no configs/ folder at the top of the zip")
    beside = tmp_path / "beside.zip"
    with zipfile.ZipFile(beside, "w") as zf:
        zf.writestr("aaa_docs/readme.txt", b"not a bundle")
        zf.write(BUNDLE / "configs" / "inference.json", "zzz_bundle/configs/inference.json")
    assert bundle_zip.unpack_bundle(beside, tmp_path / "beside", _sha(beside)).name == "zzz_bundle"
    # the extraction's own check, for members check_members would have refused
    for name in ("../outside.txt", "../aaa.txt"):  # names sorting after and before the target folder's
        with zipfile.ZipFile(tmp_path / "climb.zip", "w") as zf:
            zf.writestr(name, b"x")
        with zipfile.ZipFile(tmp_path / "climb.zip") as zf:
            with pytest.raises(bundle_zip.BundleZipError, match="would land outside"):
                bundle_zip._extract(zf, tmp_path / "inner")
        assert not (tmp_path / name[3:]).exists()
