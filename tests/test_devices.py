"""A device this machine lacks is named before any work, with what to do instead, by every entry point.

``scripts.devices.check_device`` is the one check: ``brainseg`` (``--device``), ``python -m monai.bundle
run`` (``--device``, in the configs' ``initialize``) and the 3D Slicer Lib use it. A GPU cannot exist on
this machine, so the CUDA builds and GPU counts a user may have are set on torch (the one edge mocked).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from brainseg_monai.cli import main
from conftest import BUNDLE, SAMPLE_SPLIT
from scripts.devices import check_device

IMAGE = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]


def test_devices_this_machine_has_pass_as_torch_devices():
    assert check_device(None) is None
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(" cpu:0 ") == check_device(torch.device("cpu:0")) == torch.device("cpu")  # one spelling


def test_weights_load_onto_the_cpu_however_it_is_spelt():
    """torch.load cannot restore tensors onto "cpu:0", a device torch.device accepts: it blamed the weights file."""
    from scripts.handlers import safe_load

    for where in ("cpu:0", torch.device("cpu:0"), "cpu", None):
        state = safe_load(BUNDLE / "models" / "model.pt", map_location=where)
        assert next(iter(state.values())).device == torch.device("cpu"), where


@pytest.mark.parametrize("text", ["meta", "xla", "hpu"])
def test_device_types_the_networks_do_not_run_on_are_refused(text):
    with pytest.raises(ValueError, match=f"^device '{text}': not a device the networks run on here; use cpu, cuda"):
        check_device(text)


@pytest.mark.parametrize("text", ["gpu 0", "cuda:-1", "", "$print(1)"])
def test_text_that_is_no_device_is_named(text):
    with pytest.raises(ValueError, match=r"^--device '.*': not a device \(cpu, cuda, cuda:<index>, mps\)$"):
        check_device(text, what="--device")


def test_the_cpu_has_no_index_past_zero():
    with pytest.raises(ValueError, match=r"^device 'cpu:5': the CPU is one device, cpu \(or cpu:0\); run with"):
        check_device("cpu:5")


def _cuda_build(monkeypatch, gpus: int | None) -> None:
    """This PyTorch as a CUDA build seeing ``gpus`` GPUs (None: built without CUDA)."""
    monkeypatch.setattr(torch.version, "cuda", None if gpus is None else "12.8")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(gpus))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus or 0)


def test_cuda_says_why_it_is_not_there(monkeypatch):
    _cuda_build(monkeypatch, None)
    with pytest.raises(ValueError, match=r"this PyTorch \(.*\) was built without CUDA; use cpu, or get one"):
        check_device("cuda", "use cpu", cuda_install="get one")
    _cuda_build(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"PyTorch finds no CUDA GPU \(CUDA_VISIBLE_DEVICES=\) \(no GPU, or its"):
        check_device("cuda")
    _cuda_build(monkeypatch, 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"^device 'cuda:2' is not available: this machine has 2 CUDA GPU\(s\), "):
        check_device("cuda:2")


def test_mps_off_a_mac_is_named(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    with pytest.raises(ValueError, match=r"^device 'mps' \(Apple MPS\) is not available: this PyTorch was built"):
        check_device("mps")


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_brainseg_names_the_device_before_the_output_folder_exists(command, monkeypatch, tmp_path, capsys):
    _cuda_build(monkeypatch, 1)
    out = tmp_path / "out"
    source = str(IMAGE) if command == "segment" else str(SAMPLE_SPLIT)
    assert main([command, source, "--output-dir", str(out), "--device", "cuda:1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"brainseg {command}: error: --device 'cuda:1' is not available: this machine has 1 CUDA GPU(s), "
        "cuda:0 to cuda:0; leave out --device (the bundle's choice) or use --device cpu"
    )
    assert not out.exists()


def test_a_bundle_run_names_the_device_before_writing_anything(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
        + ["--dataset_dir", str(SAMPLE_SPLIT), "--output_dir", str(out), "--device", "cpu:5"],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: device 'cpu:5': the CPU is one device, cpu (or cpu:0); run with --device cpu instead"]
    assert "Traceback" not in proc.stderr and not out.exists()
