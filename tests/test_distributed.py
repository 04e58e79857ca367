"""Multi-GPU configs run under torchrun: 2 CPU processes with the Gloo backend stand in for 2 GPUs."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLE, CONFIGS, SMOKE_NETWORK, run_bundle

CONFIG_DIR = BUNDLE / "configs"
SMOKE_CPU = CONFIGS / "smoke_cpu.json"
DONE = re.compile(r"rank (\d)/2: done, (.*)")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def torchrun(config_files: list[str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 --standalone -m monai.bundle run`` from the bundle root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    config = "[" + ",".join(repr(c) for c in config_files) + "]"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    command += ["-m", "monai.bundle", "run", "--config_file", config, *args]
    return subprocess.run(command, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=timeout)


def _done_lines(proc: subprocess.CompletedProcess) -> dict[int, str]:
    """The line each rank logs after its run (see multi_gpu_*.json), by rank."""
    return {int(m.group(1)): m.group(2) for m in DONE.finditer(proc.stdout + proc.stderr)}


# Handlers that only log: rank 0 alone runs them. Everything else (checkpoint loading, validation,
# metric gathering, the savers, which check the rank themselves) must run on every rank.
RANK0_ONLY = {"StatsHandler", "TensorBoardStatsHandler", "ignite.handlers.ProgressBar"}


@pytest.mark.parametrize(
    "files, handler_lists",
    [
        (["train.json", "multi_gpu_train.json"], ["train#handlers", "validate#handlers"]),
        (["train.json", "evaluate.json", "multi_gpu_evaluate.json"], ["validate#handlers"]),
    ],
    ids=["train", "evaluate"],
)
def test_logging_handlers_run_on_rank0_only(files, handler_lists):
    """multi_gpu_*.json disable handlers by list index: the indices must follow train.json/evaluate.json."""
    parser = ConfigParser()
    parser.read_config([str(CONFIG_DIR / f) for f in files])
    for list_id in handler_lists:
        for i, handler in enumerate(parser[list_id]):
            where = f"{list_id}#{i} ({handler['_target_']})"
            disabled = str(handler.get("_disabled_", ""))
            if handler["_target_"] in RANK0_ONLY:
                assert "dist.get_rank() > 0" in disabled, f"{where}: disable it on ranks > 0 in {files[-1]}"
            else:
                assert "dist.get_rank()" not in disabled, f"{where}: must run on every rank; fix {files[-1]}"
    if "train#handlers" in handler_lists:
        [bar] = [h for h in parser["train#handlers"] if h["_target_"] == "ignite.handlers.ProgressBar"]
        assert "@progress_bar" in bar["_disabled_"]  # the single-process switch still applies
    single = ConfigParser()
    single.read_config([str(CONFIG_DIR / f) for f in files[:-1]])
    for expr in single["initialize"]:  # what the single-process run initializes, the distributed one does too
        assert expr in parser["initialize"] or "set_determinism" in expr, expr


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(
        ["configs/train.json", "configs/multi_gpu_train.json", str(SMOKE_NETWORK), str(SMOKE_CPU)],
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(out / "eval"),
        "--train#trainer#max_epochs",
        "1",
    )
    return out, proc


@pytest.mark.slow
def test_multi_gpu_training_with_two_processes(ddp_run):
    out, proc = ddp_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    done = _done_lines(proc)
    assert set(done) == {0, 1}, log[-3000:]  # both ranks ran to the end
    # DistributedSampler split the 12 sample images: 6 per rank, 2 batches of 4 (3 without the split)
    for line in done.values():
        assert "epoch 1, 2 iteration(s) per epoch" in line
    # metrics are gathered across ranks: both ranks computed the same validation Dice
    metrics = {rank: re.search(r"metrics (\{.*\})", line).group(1) for rank, line in done.items()}
    assert metrics[0] == metrics[1] and "val_mean_dice" in metrics[0]
    # rank 0 alone logs iterations (StatsHandler is disabled on rank 1)
    assert len(re.findall(r"Epoch: 1/1, Iter: 1/2", log)) == 1
    # one best model and one training state, written by rank 0 only
    assert sorted(p.name for p in (out / "models").iterdir() if p.name != ".training.lock") == [
        "checkpoint_latest.pt",
        "model.pt",
    ]
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    parser = ConfigParser()
    parser.read_config([str(CONFIG_DIR / "inference.json"), str(SMOKE_NETWORK)])
    parser.get_parsed_content("network_def").load_state_dict(state)  # the plain, non-DDP network
    latest = torch.load(out / "models" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in latest["model"])
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == 1  # ignite stores iterations


@pytest.mark.slow
def test_multi_gpu_evaluation_matches_single_process(ddp_run, tmp_path):
    out, train_proc = ddp_run
    assert train_proc.returncode == 0, train_proc.stderr[-3000:]
    files = ["configs/train.json", "configs/evaluate.json"]
    proc = torchrun(
        [*files, "configs/multi_gpu_evaluate.json", str(SMOKE_NETWORK), str(SMOKE_CPU)],
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(tmp_path / "ddp"),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert set(_done_lines(proc)) == {0, 1}
    single = run_bundle(
        "--config_file",
        "[" + ",".join(repr(c) for c in [*files, str(SMOKE_NETWORK), str(SMOKE_CPU)]) + "]",
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(tmp_path / "single"),
    )
    assert single.returncode == 0, single.stderr[-3000:]

    def read(folder: Path) -> tuple[dict, dict]:
        summary = {k: float(v) for k, v in csv.reader(open(folder / "metrics.csv"))}
        rows = list(csv.reader(open(folder / "val_mean_dice_raw.csv")))[1:]
        return summary, {r[0]: float(r[-1]) for r in rows}

    ddp_summary, ddp_rows = read(tmp_path / "ddp")
    single_summary, single_rows = read(tmp_path / "single")
    assert len(ddp_rows) == 12 and set(ddp_rows) == set(single_rows)  # every image once, from both ranks
    for name, value in single_rows.items():
        assert ddp_rows[name] == pytest.approx(value, abs=1e-5), name
    for key, value in single_summary.items():
        assert ddp_summary[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.slow
def test_multi_gpu_resume(ddp_run, tmp_path):
    out, train_proc = ddp_run
    assert train_proc.returncode == 0, train_proc.stderr[-3000:]
    shutil.copytree(out / "models", tmp_path / "models")
    proc = torchrun(
        ["configs/train.json", "configs/multi_gpu_train.json", str(SMOKE_NETWORK), str(SMOKE_CPU)],
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--train#trainer#max_epochs",
        "2",
        "--resume",
        "true",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    done = _done_lines(proc)
    assert set(done) == {0, 1} and all(line.startswith("epoch 2,") for line in done.values())
    assert "Epoch: 2/2" in log and "Epoch: 1/2" not in log  # every rank restored the state and went on
    latest = torch.load(tmp_path / "models" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == 2


def test_shutdown_releases_ddp_and_destroys_the_group(tmp_path):
    """The configs' finalize: DDP lets go of the group (a late Gloo teardown aborts), the module still runs."""
    from scripts.distributed import shutdown

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        network = torch.nn.parallel.DistributedDataParallel(torch.nn.Conv2d(1, 2, 3))
        network(torch.ones(1, 1, 5, 5)).sum().backward()
        shutdown(network)
        assert not torch.distributed.is_initialized()
        assert network.reducer is None and network.process_group is None
        assert network.module(torch.ones(1, 1, 5, 5)).shape == (1, 2, 3, 3)
        shutdown(network)  # a second call, or one without a group, does nothing
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
