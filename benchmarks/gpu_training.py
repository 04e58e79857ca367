"""Training speed on one device against the hardware floor, printed as JSON lines and a table (not a test).

    python benchmarks/gpu_training.py [--device cuda|cpu] [--dataset-dir DIR] [--split train] [--max-images N]
        [--iterations 50] [--warmup 10] [--variants plain_fp32,plain_fast,default,fast,fast_contiguous]
        [--extra-config FILE ...] [--compile-mode default] [--full-run DATASET_DIR [--full-run-variants fast]
        [--epochs E]]

1. Count, at the shipped network and input size (``bundle/configs/train.json``):
   - training FLOPs per image, forward and backward, with ``torch.utils.flop_counter.FlopCounterMode`` on
     the bundle's ``network_def`` (convolutions and matrix products, 2 FLOPs per multiply-add; the
     element-wise work of norms, activations and the loss is not FLOPs that matter, it is bytes, below);
   - the bytes one training step must move through device memory at least, per image:
     parameters (fp32 master weights read in forward; under AMP their 16-bit copies written and read),
     weight gradients written in backward, the fused AdamW step (reads parameter, gradient, two moments;
     writes parameter and two moments: 28 bytes per parameter), all divided by the batch; plus the
     activations: every tensor autograd saves for backward (measured with ``saved_tensors_hooks`` on the
     meta device, de-duplicated by storage, parameters excluded) is written once in forward and read once
     in backward, at 16 bits under AMP. This is a floor: it leaves out the gradients of activations and
     every re-read a real kernel sequence does (perfect fusion and caching). For context the script also
     prints what eager PyTorch moves if every operator reads its inputs and writes its outputs once;
   - the floor time per image from the measured H200 ceilings (``../shared/REFERENCE.md`` section 4:
     bf16 matrix products about 790 TFLOP/s, device memory about 4.3 TB/s): the larger of FLOPs / peak
     and bytes / bandwidth.
2. Measure images/s on one device (``--device``; default cuda when available, else cpu), in one run:
   - ``plain_fp32``: a plain PyTorch loop on random tensors already on the device (same network, loss,
     optimizer, batch and size as train.json, fp32, eager): the network step alone;
   - ``plain_fast``: the same loop with the fast override's settings (bf16 autocast, channels_last, fused
     AdamW, ``torch.compile``; CUDA only);
   - ``default``: the bundle's own pipeline from train.json (CacheDataset, ThreadDataLoader, augmentation,
     SupervisedTrainer with its per-iteration metric and loss logging);
   - ``fast``: train.json + ``configs/fast_gpu.json``; ``fast_contiguous``: the same without
     channels_last (to decide whether channels_last helps; CUDA only).
   The bundle variants run their trainer with validation and checkpoint handlers disabled (not per-step
   costs); the window is timed between two device synchronisations after ``--warmup`` iterations (at
   least one full epoch when the network is compiled, so a recompile for the last short batch falls
   outside it). Each variant also reports the data pipeline alone (the trainer's loader iterated without
   training) and the host-device synchronisations per step: on CUDA counted with
   ``torch.cuda.set_sync_debug_mode`` (split into the step's thread and the loader's thread); on the CPU a
   proxy, the operators that would synchronise on a GPU (``.item()``, ``bool(tensor)``, ``nonzero``,
   ``equal``) run in the step's thread.
   Every figure is also given as a fraction of the floor; on a CPU that fraction is not printed (the
   floor is an H200's) and is owed to a run on the GPU.
3. ``--full-run DATASET_DIR``: ``python -m monai.bundle run`` of a whole training (train.json, or
   train.json + fast_gpu.json) in a subprocess, as a user runs it, with start-up (process start to the
   trainer's first iteration: imports, config parsing, caching the data set, building the network) reported
   apart from the training time, the first epoch (compilation) apart from the steady epochs, validation
   apart, and the best validation Dice.

The machine may be shared: compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
TRAIN_JSON = BUNDLE / "configs" / "train.json"
FAST_JSON = REPO / "configs" / "fast_gpu.json"
SHARED_DATA = REPO.parent / "shared" / "data" / "brain_tumor_coco"

# Measured on an NVIDIA H200 (../shared/REFERENCE.md section 4)
H200_BF16_FLOPS = 790e12
H200_BYTES_PER_S = 4.3e12

VARIANT_CONFIGS = {"default": [TRAIN_JSON], "fast": [TRAIN_JSON, FAST_JSON], "fast_contiguous": [TRAIN_JSON, FAST_JSON]}
# operators that copy a device value to the host and so wait for the device (on CUDA)
SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.equal", "aten.masked_select", "aten._unique")


def emit(kind: str, payload: dict[str, Any]) -> None:
    print(json.dumps({kind: payload}, default=str), flush=True)


def resolve_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- configs


def bundle_parser(
    configs: list[Path],
    device: torch.device,
    workdir: str,
    dataset_dir: str | None = None,
    split: str = "train",
    val_split: str | None = None,
    max_images: int | None = None,
    overrides: dict[str, Any] | None = None,
):
    """A ConfigParser of the layered bundle configs, pointed at a device, a data set and a scratch folder."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    # train.json switches AMP on whenever CUDA exists; follow the device asked for instead
    if FAST_JSON not in configs:
        parser["use_amp"] = device.type == "cuda"
    parser["progress_bar"] = False
    parser["ckpt_dir"] = os.path.join(workdir, "models")
    parser["output_dir"] = os.path.join(workdir, "eval")
    if dataset_dir is not None:
        parser["dataset_dir"] = dataset_dir
        parser["train_split"] = split
        parser["val_split"] = val_split or split
    if max_images:
        parser["train#dataset#data"] = f"$@train#datalist[:{int(max_images)}]"
        parser["validate#dataset#data"] = f"$@validate#datalist[:{int(max_images)}]"
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


# ---------------------------------------------------------------------------------------------- counting


def count_training_step(network: torch.nn.Module, size: list[int], batch: int, in_channels: int = 1) -> dict:
    """FLOPs and bytes of one training step per image, on the meta device (no compute, any machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, Any] = {"input_px": list(size), "batch": batch}
    params = sum(p.numel() for p in network.parameters())
    out["params"] = params
    for label, dtype in (("fp32", torch.float32), ("amp16", torch.bfloat16)):
        net = network.to("meta").to(dtype).train()
        x = torch.empty(batch, in_channels, *size, device="meta", dtype=dtype)
        param_storages = {p.untyped_storage()._cdata for p in net.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            key = t.untyped_storage()._cdata
            if key not in param_storages:
                saved[key] = t.untyped_storage().nbytes()
            return t

        with FlopCounterMode(display=False) as fwd, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = net(x)
        with FlopCounterMode(display=False) as bwd:
            y.float().sum().backward()
        if label == "fp32":
            out["forward_gflop_per_image"] = fwd.get_total_flops() / batch / 1e9
            out["backward_gflop_per_image"] = bwd.get_total_flops() / batch / 1e9
            out["train_gflop_per_image"] = out["forward_gflop_per_image"] + out["backward_gflop_per_image"]
        out[f"saved_activations_mb_per_image_{label}"] = sum(saved.values()) / batch / 1e6
        out[f"eager_op_io_mb_per_image_{label}"] = eager_op_io_bytes(net, x) / batch / 1e6
    return out


class _OpIO(TorchDispatchMode):
    """Bytes every operator reads (tensor inputs) and writes (tensor outputs), views excluded."""

    VIEWS = (
        "view",
        "reshape",
        "expand",
        "detach",
        "alias",
        "t.default",
        "transpose",
        "permute",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "as_strided",
        "_unsafe_view",
    )

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = str(func)
        if not any(v in name for v in self.VIEWS):
            flat = torch.utils._pytree.tree_leaves((args, kwargs, result))
            self.bytes += sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
        return result


def eager_op_io_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    for p in net.parameters():
        p.grad = None
    with _OpIO() as io:
        net(x).float().sum().backward()
    return io.bytes


def floor_per_image(count: dict, batch: int, peak_flops: float, peak_bytes_per_s: float) -> dict:
    """The floor time per image: max(compute floor, memory floor) at the given ceilings (AMP, 16-bit)."""
    p = count["params"]
    # per step: fp32 weights read (4) + 16-bit copies written and read (2 + 2) + fp32 weight grads written (4)
    # + fused AdamW: read param, grad, exp_avg, exp_avg_sq (16), write param, exp_avg, exp_avg_sq (12)
    param_bytes_per_step = (4 + 2 + 2 + 4 + 16 + 12) * p
    activation_bytes = 2 * count["saved_activations_mb_per_image_amp16"] * 1e6  # written in forward, read in backward
    data_bytes = 4 * math.prod(count["input_px"]) * 2  # image and label read once (fp32)
    bytes_per_image = param_bytes_per_step / batch + activation_bytes + data_bytes
    compute_s = count["train_gflop_per_image"] * 1e9 / peak_flops
    memory_s = bytes_per_image / peak_bytes_per_s
    floor_s = max(compute_s, memory_s)
    return {
        "batch": batch,
        "param_mb_per_image": param_bytes_per_step / batch / 1e6,
        "activation_mb_per_image": activation_bytes / 1e6,
        "data_mb_per_image": data_bytes / 1e6,
        "floor_mb_per_image": bytes_per_image / 1e6,
        "eager_op_io_mb_per_image_amp16": count["eager_op_io_mb_per_image_amp16"],
        "peak_tflops": peak_flops / 1e12,
        "peak_tb_per_s": peak_bytes_per_s / 1e12,
        "compute_floor_us_per_image": compute_s * 1e6,
        "memory_floor_us_per_image": memory_s * 1e6,
        "floor_us_per_image": floor_s * 1e6,
        "floor_images_per_s": 1.0 / floor_s,
        "bound": "memory" if memory_s >= compute_s else "compute",
        "eager_memory_floor_us_per_image": count["eager_op_io_mb_per_image_amp16"] * 1e6 / peak_bytes_per_s * 1e6,
    }


# ------------------------------------------------------------------------------------------- sync audit


class HostSyncCounter(TorchDispatchMode):
    """Counts, in the current thread, the operators that copy a device value to the host (a sync on CUDA).

    A CPU proxy for ``torch.cuda.set_sync_debug_mode``: it sees ``.item()``, ``bool(tensor)``,
    ``nonzero`` and the like, not host-to-device copies of fresh host data (invisible on a CPU).
    Only counts while ``active`` is true.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.count = 0
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if self.active and name.startswith(SYNC_OPS):
            self.count += 1
            self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class CudaSyncAudit:
    """``torch.cuda.set_sync_debug_mode('warn')`` with the warnings counted per thread."""

    def __init__(self) -> None:
        self.by_thread: dict[str, int] = {}
        self._catch: Any = None

    def start(self) -> None:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message):
                name = "step" if threading.current_thread() is threading.main_thread() else "loader"
                self.by_thread[name] = self.by_thread.get(name, 0) + 1
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------ measuring


def plain_loop(
    network_def: torch.nn.Module,
    loss_fn,
    batch: int,
    size: list[int],
    device: torch.device,
    iterations: int,
    warmup: int,
    fast: bool,
    compile_mode: str = "default",
) -> dict:
    """Images/s of a bare training loop on random tensors already on the device."""
    on_cuda = device.type == "cuda"
    fmt = torch.channels_last if (fast and on_cuda) else torch.contiguous_format
    network = network_def.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4, fused=True if fast else None)
    model = torch.compile(network, mode=compile_mode) if (fast and on_cuda) else network
    x = torch.rand(batch, 1, *size, device=device).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, *size, device=device) > 0.9).float()
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if (fast and on_cuda) else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    t_first = time.perf_counter()
    step()
    synchronize(device)
    first_s = time.perf_counter() - t_first
    for _ in range(max(0, warmup - 1)):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - t0
    return {
        "images_per_s": batch * iterations / elapsed,
        "first_step_s": first_s,
        "iterations": iterations,
        "warmup": warmup,
        "batch": batch,
    }


def measure_bundle(variant: str, device: torch.device, workdir: str, args, iterations: int, warmup: int) -> dict:
    """Images/s of a bundle variant's own trainer (validation and checkpoints disabled), its loader alone,
    its start-up, and its host-device synchronisations per step."""
    from ignite.engine import Events

    overrides: dict[str, Any] = {
        # validation and checkpoint saving run once per epoch, not per step: leave them out
        "train#handlers#3#_disabled_": True,
        "train#handlers#4#_disabled_": True,
    }
    if variant == "fast_contiguous":
        overrides["memory_format"] = "$torch.contiguous_format"
    if variant.startswith("fast"):
        overrides["compile_mode"] = args.compile_mode
    configs = VARIANT_CONFIGS[variant] + [Path(c) for c in args.extra_config]
    parser = bundle_parser(configs, device, workdir, args.dataset_dir, args.split, None, args.max_images, overrides)
    parser["train#trainer#max_epochs"] = 10_000  # stopped by the timing handler
    t0 = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    startup_s = time.perf_counter() - t0
    kinds = [type(h).__name__ for h in parser.get_parsed_content("train#handlers")]
    assert "ValidationHandler" not in kinds and "TrainingStateSaver" not in kinds, kinds
    batch = parser.get_parsed_content("batch_size")
    epoch_length = len(trainer.data_loader)
    compiled = bool(getattr(trainer, "compile", False))
    if compiled:  # the last short batch of an epoch recompiles once: keep that out of the window
        warmup = max(warmup, epoch_length + 2)
    audit_iters = args.audit_iterations
    audit: Any = CudaSyncAudit() if device.type == "cuda" else HostSyncCounter()
    marks: dict[str, float] = {}
    audited = {"steps": 0, "on": False}

    def on_started(engine) -> None:
        if audited["on"] and isinstance(audit, HostSyncCounter):
            audit.active = True  # count the step and its per-iteration handlers, not epoch events

    def on_completed(engine) -> None:
        it = engine.state.iteration
        if isinstance(audit, HostSyncCounter):
            audit.active = False
        if it == 1:
            synchronize(device)
            marks["first"] = time.perf_counter()
        if it == warmup:
            synchronize(device)
            marks["t0"] = time.perf_counter()
        elif it == warmup + iterations:
            synchronize(device)
            marks["t1"] = time.perf_counter()
            if audit_iters <= 0:
                engine.terminate()
                return
            # audit after the timed window: the CPU proxy slows every operator down
            audited["on"] = True
            audit.start() if isinstance(audit, CudaSyncAudit) else audit.__enter__()
        elif audited["on"]:
            audited["steps"] += 1
            if audited["steps"] >= audit_iters:
                synchronize(device)
                audit.stop() if isinstance(audit, CudaSyncAudit) else audit.__exit__(None, None, None)
                audited["on"] = False
                engine.terminate()

    trainer.add_event_handler(Events.ITERATION_STARTED, on_started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_completed)
    t_run = time.perf_counter()
    trainer.run()
    images_per_s = batch * iterations / (marks["t1"] - marks["t0"])
    result: dict[str, Any] = {
        "images_per_s": images_per_s,
        "startup_s": startup_s,
        "first_step_s": marks["first"] - t_run,
        "iterations": iterations,
        "warmup": warmup,
        "batch": batch,
        "epoch_length": epoch_length,
        "compiled": compiled,
        "amp": bool(trainer.amp),
        "amp_dtype": str(trainer.amp_kwargs.get("dtype", torch.float16 if trainer.amp else None)),
        "train_images_cached": len(trainer.data_loader.dataset),
    }
    if isinstance(audit, HostSyncCounter):
        result["host_syncs_per_step_cpu_proxy"] = audit.count / max(1, audited["steps"])
        result["host_sync_ops_cpu_proxy"] = audit.ops
    else:
        n = max(1, audited["steps"])
        result["cuda_syncs_per_step"] = {k: v / n for k, v in audit.by_thread.items()}
    # the data pipeline alone: cached copies, augmentation, collation (and the loader's own thread)
    loader = trainer.data_loader
    n_batches = min(iterations, 4 * epoch_length)
    done = 0
    synchronize(device)
    t0 = time.perf_counter()
    while done < n_batches:
        for _ in loader:
            done += 1
            if done >= n_batches:
                break
    synchronize(device)
    result["loader_images_per_s"] = batch * done / (time.perf_counter() - t0)
    del trainer, parser
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------------------------------ full run

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (\S+) - \w+ - (.*)$")


def _taken(message: str) -> float:
    h, m, s = re.search(r"Time taken: (\d+):(\d+):([\d.]+)", message).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def full_run(variant: str, dataset_dir: str, device: torch.device, args) -> dict:
    """A whole ``python -m monai.bundle run`` training; start-up apart from training, from its own log."""
    dataset_dir = str(Path(dataset_dir).resolve())
    from scripts.coco import coco_to_datalist, split_dir

    split = args.full_run_split or args.split
    n_train = len(coco_to_datalist(split_dir(dataset_dir, split), None))
    configs = [str(c) for c in VARIANT_CONFIGS[variant]] + [str(Path(c).resolve()) for c in args.extra_config]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            repr(configs),
            "--dataset_dir",
            dataset_dir,
            "--train_split",
            split,
            "--val_split",
            args.val_split,
            "--device",
            f"$torch.device('{device}')",
            "--progress_bar",
            "False",
            "--ckpt_dir",
            os.path.join(tmp, "models"),
            "--output_dir",
            os.path.join(tmp, "eval"),
        ]
        if variant == "default":
            cmd += ["--use_amp", str(device.type == "cuda")]
        if args.epochs:
            cmd += ["--train#trainer#max_epochs", str(args.epochs)]
        launched = time.time()
        proc = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True)
        finished = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} full run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    started = None
    train_s = None
    epochs: list[float] = []
    vals: list[float] = []
    best = None
    for line in proc.stdout.splitlines():
        found = re.search(r"Key metric: val_mean_dice best value: ([-\d.eE]+)", line)
        if found:
            best = float(found.group(1))
        m = _LOG_TIME.match(line)
        if not m:
            continue
        stamp, logger, message = m.groups()
        if logger.endswith("SupervisedTrainer") and message.startswith("Engine run resuming") and started is None:
            started = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        elif logger.endswith("SupervisedTrainer") and message.startswith("Engine run finished"):
            train_s = _taken(message)
        elif logger.endswith("SupervisedTrainer") and re.match(r"Epoch\[\d+\] Complete", message):
            epochs.append(_taken(message))
        elif logger.endswith("SupervisedEvaluator") and re.match(r"Epoch\[\d+\] Complete", message):
            vals.append(_taken(message))
    if started is None or train_s is None:
        raise RuntimeError(f"could not read the trainer's log of the {variant} run:\n{proc.stdout[-3000:]}")
    steady = [e - v for e, v in zip(epochs[1:], vals[1:])] or [epochs[0] - (vals[0] if vals else 0.0)]
    return {
        "variant": variant,
        "device": str(device),
        "epochs": len(epochs),
        "train_images": n_train,
        "startup_s": started - launched,
        "train_s": train_s,
        "shutdown_s": finished - launched - (started - launched) - train_s,
        "total_s": finished - launched,
        "first_epoch_s": epochs[0] if epochs else None,
        "median_epoch_s": statistics.median(epochs[1:]) if len(epochs) > 1 else None,
        "median_validation_s": statistics.median(vals) if vals else None,
        "steady_train_images_per_s": n_train / statistics.median(steady),
        "best_val_dice": best,
    }


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--dataset-dir", default=None, help="COCO data root (default: ../shared data, else the samples)")
    ap.add_argument("--split", default=None, help="training split (default: train, or valid for the samples)")
    ap.add_argument("--val-split", default="valid")
    ap.add_argument("--max-images", type=int, default=None, help="cache only the first N training images")
    ap.add_argument("--iterations", type=int, default=None, help="timed steps per variant (default 50 cuda, 8 cpu)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 cuda, 2 cpu)")
    ap.add_argument("--audit-iterations", type=int, default=3, help="steps audited for host-device syncs")
    ap.add_argument(
        "--variants",
        default=None,
        help="comma list of plain_fp32, plain_fast, default, fast, fast_contiguous "
        "(default: all on cuda; plain_fp32,default,fast on cpu)",
    )
    ap.add_argument("--extra-config", action="append", default=[], help="config layered last on every bundle run")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode of the fast variants")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_FLOPS / 1e12)
    ap.add_argument("--peak-tb-per-s", type=float, default=H200_BYTES_PER_S / 1e12)
    ap.add_argument("--skip-measure", action="store_true", help="only count (and --full-run if given)")
    ap.add_argument("--full-run", default=None, metavar="DATASET_DIR", help="also time whole training runs on it")
    ap.add_argument("--full-run-variants", default="fast", help="comma list of default, fast")
    ap.add_argument("--full-run-split", default=None, help="training split of the full runs (default: --split)")
    ap.add_argument("--epochs", type=int, default=None, help="max_epochs of the full runs (default: the config's)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    if args.dataset_dir is None:
        shared = (SHARED_DATA / "train" / "_annotations.coco.json").is_file()
        args.dataset_dir = str(SHARED_DATA if shared else BUNDLE / "sample_data")
        args.split = args.split or ("train" if shared else "valid")
    args.split = args.split or "train"
    iterations = args.iterations or (50 if on_cuda else 8)
    warmup = args.warmup or (10 if on_cuda else 2)
    variants = (
        args.variants
        or ("plain_fp32,plain_fast,default,fast,fast_contiguous" if on_cuda else "plain_fp32,default,fast")
    ).split(",")
    name = torch.cuda.get_device_name(device) if on_cuda else f"cpu ({torch.get_num_threads()} threads)"
    results: dict[str, Any] = {"device": str(device), "device_name": name, "torch": torch.__version__}
    emit(
        "setup",
        {
            **results,
            "dataset_dir": args.dataset_dir,
            "split": args.split,
            "max_images": args.max_images,
            "iterations": iterations,
            "warmup": warmup,
            "variants": variants,
        },
    )

    # 1. count, at the size and network of the configs as layered (train.json + extra configs)
    with tempfile.TemporaryDirectory() as tmp:
        parser = bundle_parser([TRAIN_JSON] + [Path(c) for c in args.extra_config], torch.device("cpu"), tmp)
        size = list(parser.get_parsed_content("spatial_size"))
        batch = parser.get_parsed_content("batch_size")
        in_channels = parser.get_parsed_content("network_def#in_channels")
        count = count_training_step(parser.get_parsed_content("network_def"), size, 2, in_channels)
    emit("count", count)
    floor = floor_per_image(count, batch, args.peak_tflops * 1e12, args.peak_tb_per_s * 1e12)
    emit("floor", floor)
    results.update(count=count, floor=floor, measure={})

    # 2. measure, all variants on the same device in this one process
    if not args.skip_measure:
        for variant in variants:
            with tempfile.TemporaryDirectory() as tmp:
                if variant.startswith("plain"):
                    if variant == "plain_fast" and not on_cuda:
                        continue
                    p = bundle_parser([TRAIN_JSON] + [Path(c) for c in args.extra_config], device, tmp)
                    r = plain_loop(
                        p.get_parsed_content("network_def"),
                        p.get_parsed_content("loss"),
                        batch,
                        size,
                        device,
                        iterations,
                        warmup,
                        fast=variant == "plain_fast",
                        compile_mode=args.compile_mode,
                    )
                else:
                    if variant == "fast_contiguous" and not on_cuda:
                        continue
                    r = measure_bundle(variant, device, tmp, args, iterations, warmup)
            r["ms_per_image"] = 1000.0 / r["images_per_s"]
            if on_cuda:
                r["fraction_of_floor"] = r["images_per_s"] / floor["floor_images_per_s"]
            else:
                r["fraction_of_floor"] = None
                r["fraction_of_floor_note"] = "owed: the floor is an H200's; run this script with --device cuda there"
            results["measure"][variant] = r
            emit("measure", {"variant": variant, **r})

    # 3. whole training runs
    if args.full_run:
        results["full_run"] = {}
        for variant in args.full_run_variants.split(","):
            r = full_run(variant, args.full_run, device, args)
            if on_cuda:
                r["fraction_of_floor_steady"] = r["steady_train_images_per_s"] / floor["floor_images_per_s"]
            results["full_run"][variant] = r
            emit("full_run", r)

    print_table(results)
    return results


def print_table(results: dict) -> None:
    floor = results["floor"]
    count = results["count"]
    print()
    print(
        f"device: {results['device_name']}   network: {count['params'] / 1e6:.2f}M params, "
        f"{count['input_px'][0]}x{count['input_px'][1]} px, batch {floor['batch']}"
    )
    print(
        f"per image: {count['train_gflop_per_image']:.2f} GFLOP (fwd {count['forward_gflop_per_image']:.2f} + "
        f"bwd {count['backward_gflop_per_image']:.2f}); floor bytes {floor['floor_mb_per_image']:.1f} MB "
        f"(activations {floor['activation_mb_per_image']:.1f}, parameters {floor['param_mb_per_image']:.1f}); "
        f"eager op I/O {floor['eager_op_io_mb_per_image_amp16']:.0f} MB"
    )
    print(
        f"floor at {floor['peak_tflops']:.0f} TFLOP/s, {floor['peak_tb_per_s']:.1f} TB/s: compute "
        f"{floor['compute_floor_us_per_image']:.1f} us, memory {floor['memory_floor_us_per_image']:.1f} us "
        f"-> {floor['floor_us_per_image']:.1f} us/image ({floor['floor_images_per_s']:.0f} images/s, "
        f"{floor['bound']}-bound)"
    )
    rows = results.get("measure", {})
    if rows:
        print(
            f"{'variant':<16}{'images/s':>10}{'ms/image':>10}{'loader img/s':>14}{'syncs/step':>12}"
            f"{'start-up s':>12}{'of floor':>10}"
        )
        for variant, r in rows.items():
            syncs = r.get("host_syncs_per_step_cpu_proxy", r.get("cuda_syncs_per_step", {}).get("step", "-"))
            frac = f"{100 * r['fraction_of_floor']:.2f}%" if r.get("fraction_of_floor") is not None else "owed"
            loader = f"{r['loader_images_per_s']:.0f}" if "loader_images_per_s" in r else "-"
            start = f"{r['startup_s']:.1f}" if "startup_s" in r else "-"
            syncs = f"{syncs:.1f}" if isinstance(syncs, float) else str(syncs)
            print(
                f"{variant:<16}{r['images_per_s']:>10.1f}{r['ms_per_image']:>10.2f}{loader:>14}{syncs:>12}"
                f"{start:>12}{frac:>10}"
            )
    for variant, r in results.get("full_run", {}).items():
        print(
            f"full run {variant}: start-up {r['startup_s']:.1f} s, training {r['train_s']:.1f} s "
            f"({r['epochs']} epochs, first {r['first_epoch_s']:.1f} s, validation "
            f"{r['median_validation_s'] or 0:.2f} s/epoch), steady {r['steady_train_images_per_s']:.0f} images/s, "
            f"best val Dice {r['best_val_dice']}"
        )


if __name__ == "__main__":
    main()
