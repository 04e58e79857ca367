"""Training on a GPU machine: one prepared command, a trained model and every GPU figure, saved stage by stage.

It is made for a remote GPU machine reached through a job runner that copies the working tree
to the machine (64 MiB a command, working tree included), runs one command with a time limit
and brings back at most 8 files from ``$OUT``. The training split (63 MB of JPEGs) does not fit
in one command, so it travels in two halves, in two commands run back to back while the machine
is still up (files a command carried stay there for the next one). Nothing needs deciding once
the GPU machine is available:

On the CPU, before (once; ``prepare`` is idempotent)::

    python benchmarks/gpu_session.py prepare [--dataset-dir DATASET]

writes the GPU machine's missing packages as cp312 wheels into ``.whl/``, the data into
``.gpu_carry/a`` (half the training images) and ``.gpu_carry/b`` (the other half, plus
validation images with their true outlines), checks each command against the 64 MiB, and prints
the two GPU commands. Then, on the GPU machine (the commands ``prepare`` prints):

* part 1 (``carry: [".whl", ".gpu_carry/a"]``): install and check CUDA; a CUDA smoke run of
  ``configs/fast_gpu.json`` (compile, fused AdamW, ``ToDeviced`` in ``CacheDataset``,
  device-side augmentation); ``benchmarks/gpu_training.py``: images/s of the plain loop, the
  default ``train.json`` and the fast override against the floor, and a whole fast training
  timed with its start-up apart.
* part 2 (``carry: [".whl", ".gpu_carry/b"]``): the shipped recipe's stages, run by
  :func:`brainseg_monai.recipe.run_recipe` (the code of ``brainseg train --recipe``), one call per
  stage, with more epochs than the CPU allows, each in the time left to it (the free stage needs
  real tumor-free slices, which are not carried: it is skipped, and the robust stage's model is
  ``model.pt``); the cascade evaluated on the carried validation images; weights, logs, curves and
  ``session_part2.json`` (the record of the run).

Every stage writes its result into ``$OUT`` when it ends, and the run stops cleanly before
``--deadline``: what finished is kept when something fails or time runs short. Afterwards, on
the CPU::

    python benchmarks/gpu_accept.py FILES_AT [--install]

checks what came back and puts it in place. ``run --part all --dry-run`` is the same code path on
the CPU with the sample split and one epoch per stage (``tests/test_gpu_session.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # on the device the repository is not installed: its code is imported from here
from brainseg_monai.bundle_zip import sha256_file as sha256  # noqa: E402
from brainseg_monai.recipe import RECIPE, Stage, plan_stages  # noqa: E402  (RECIPE: gpu_accept.py reads it here)

BUNDLE = REPO / "bundle"
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data" / "brain_tumor_coco"
WHEELS = REPO / ".whl"
CARRY = REPO / ".gpu_carry"
ANNOTATIONS = "_annotations.coco.json"
#: What the device lacks (its image has torch 2.11, numpy, scipy, scikit-image, pillow, tensorboard,
#: tqdm, matplotlib), pinned as in constraints.txt; monai.bundle's command line needs fire.
DEVICE_WHEELS = ("monai==1.6.1", "pytorch-ignite==0.5.5", "pycocotools==2.0.11", "fire==0.7.1", "termcolor==3.3.0")
#: What one command on the GPU machine may carry, working tree included.
CARRY_LIMIT = 64 * 2**20
#: Validation images carried in part 2 (for the trainer's validation and the final figures).
VALID_IMAGES = 100
INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
    ".whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit 1; "
)


# ----------------------------------------------------------------------------------------- helpers


#: The recipe's run folder under the work folder: an output folder never holds the data it reads.
RECIPE_DIR = "recipe"


def write_json(data: Any, path: Path) -> None:
    """Atomically, so a run killed mid-write leaves the previous version."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class Session:
    """The figures of one GPU command, written to ``OUT/<name>`` after every stage."""

    def __init__(self, out: Path, name: str, deadline_s: float) -> None:
        self.out = out
        self.path = out / name
        self.started = time.time()
        self.deadline = self.started + deadline_s
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}

    def left(self) -> float:
        return self.deadline - time.time()

    def stage(self, name: str, work: Callable[[float], dict[str, Any]], minimum_s: float = 20.0) -> dict | None:
        """Run one stage with the time left to it; record its figures, or why it failed or was skipped."""
        if self.left() < minimum_s:
            self.data["stages"][name] = {
                "status": "skipped",
                "why": f"{self.left():.0f} s left, {minimum_s:.0f} needed",
            }
            self.save()
            return None
        began = time.time()
        try:
            result = {"status": "ok", **work(self.left())}
        except Exception as e:  # noqa: BLE001 - keep what earlier stages made; say what failed
            result = {
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-4000:],
            }
        result["wall_s"] = round(time.time() - began, 2)
        self.data["stages"][name] = result
        self.save()
        print(f"[gpu_session] {name}: {result['status']} in {result['wall_s']} s", flush=True)
        return result if result["status"] == "ok" else None

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.started, 2)
        write_json(self.data, self.path)


def bundle_run(
    configs: Sequence[str | os.PathLike], overrides: dict[str, Any], log: Path, timeout: float
) -> tuple[int, bool]:
    """``python -m monai.bundle run`` in a child process, as a user runs it; returns (exit code, timed out).

    On a timeout the process group is killed: what the run checkpointed is kept.
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([str(c) for c in configs])]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]  # fire reads True/False/40 as Python literals
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=BUNDLE, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return -9, True


def best_val_dice(log: Path) -> float | None:
    import re

    found = re.findall(r"Key metric: val_mean_dice best value: ([-\d.eE]+)", log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def epochs_done(log: Path) -> int:
    import re

    return len(re.findall(r"SupervisedTrainer - INFO - Epoch\[\d+\] Complete", log.read_text(errors="replace")))


# ----------------------------------------------------------------------------------------- prepare


def tree_bytes() -> int:
    """What the job runner sends of the checkout: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum(
        (REPO / os.fsdecode(name)).stat().st_size for name in listed if name and (REPO / os.fsdecode(name)).is_file()
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_split(folder: Path, coco: dict, images: list[dict], source: Path, outlines: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ids = {im["id"] for im in images}
    subset = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    (folder / ANNOTATIONS).write_text(json.dumps(subset))
    for im in images:
        shutil.copy2(source / im["file_name"], folder / im["file_name"])
    if outlines is not None:
        target = folder.parent / f"{folder.name}_outlines"
        target.mkdir(exist_ok=True)
        for im in images:
            outline = outlines / (Path(im["file_name"]).stem + ".png")
            if outline.is_file():
                shutil.copy2(outline, target / outline.name)


def prepare(dataset_dir: Path, valid_images: int = VALID_IMAGES, download: bool = True) -> dict[str, Any]:
    """Wheels and the two data halves; each call's size against :data:`CARRY_LIMIT`."""
    if download:
        WHEELS.mkdir(exist_ok=True)
        missing = [w for w in DEVICE_WHEELS if not list(WHEELS.glob(w.split("==")[0].replace("-", "_") + "-*.whl"))]
        if missing:
            platforms = [
                f"--platform={p}"
                for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
            ]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
                + ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(WHEELS), *missing],
                check=True,
            )
    train_dir, valid_dir = dataset_dir / "train", dataset_dir / "valid"
    train = json.loads((train_dir / ANNOTATIONS).read_text())
    valid = json.loads((valid_dir / ANNOTATIONS).read_text())
    if CARRY.exists():
        shutil.rmtree(CARRY)
    # part 2 carries the validation images too: give part 1 the larger share of the training images
    chosen_valid = sorted(valid["images"], key=lambda im: im["file_name"])[:valid_images]
    valid_bytes = sum((valid_dir / im["file_name"]).stat().st_size for im in chosen_valid)
    images = sorted(train["images"], key=lambda im: im["file_name"])
    sizes = [(train_dir / im["file_name"]).stat().st_size for im in images]
    total = sum(sizes)
    cut, running = 0, 0
    while cut < len(images) and running + sizes[cut] <= (total + valid_bytes) / 2:
        running += sizes[cut]
        cut += 1
    _write_split(CARRY / "a" / "train", train, images[:cut], train_dir)
    _write_split(CARRY / "b" / "train", train, images[cut:], train_dir)
    _write_split(CARRY / "b" / "valid", valid, chosen_valid, valid_dir, dataset_dir / "valid_outlines")
    tree, wheels = tree_bytes(), folder_bytes(WHEELS)
    calls = {part: tree + wheels + folder_bytes(CARRY / part) for part in ("a", "b")}
    report = {
        "train_images": {"a": cut, "b": len(images) - cut},
        "valid_images": len(chosen_valid),
        "bytes": {"tree": tree, "wheels": wheels, **{f"call_{k}": v for k, v in calls.items()}},
        "limit": CARRY_LIMIT,
        "fits": all(v <= CARRY_LIMIT for v in calls.values()),
    }
    return report


def device_commands(deadline_1: int = 150, deadline_2: int = 480) -> list[dict[str, Any]]:
    """The two GPU commands, as they are to be run: about 11 minutes of GPU time in all, leaving
    time for the machine's start and the transfers within 15 minutes."""
    script = "python3 benchmarks/gpu_session.py run"
    return [
        {
            "command": f"{INSTALL}{script} --part 1 --out $OUT --deadline {deadline_1}",
            "carry": [".whl", ".gpu_carry/a"],
            "timeout_s": deadline_1 + 45,
        },
        {
            "command": f"{INSTALL}{script} --part 2 --out $OUT --deadline {deadline_2}",
            "carry": [".whl", ".gpu_carry/b"],
            "timeout_s": min(600, deadline_2 + 45),
        },
    ]


# ----------------------------------------------------------------------------------------- device stages


def check_environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("monai", "ignite", "pycocotools", "skimage", "numpy"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "present")
        except ImportError as e:
            raise RuntimeError(f"{name} is missing: {e}") from None
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to torch")
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        began = time.time()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        info.update(
            device_name=torch.cuda.get_device_name(0),
            memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            bf16_matmul_tflops=round(10 * 2 * 4096**3 / (time.time() - began) / 1e12, 1),
        )
    return info


def assemble_data(parts: Sequence[Path], target: Path) -> dict[str, Any]:
    """One dataset folder (``train``, ``valid``) from the carried halves there are, symlinked."""
    train = target / "train"
    train.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] | None = None
    for part in parts:
        folder = part / "train"
        if not (folder / ANNOTATIONS).is_file():
            continue
        coco = json.loads((folder / ANNOTATIONS).read_text())
        for im in coco["images"]:
            (train / im["file_name"]).symlink_to((folder / im["file_name"]).resolve())
        if merged is None:
            merged = coco
        else:
            merged["images"] += coco["images"]
            merged["annotations"] += coco["annotations"]
    if merged is None:
        raise FileNotFoundError(f"no carried training data in {', '.join(map(str, parts))}")
    (train / ANNOTATIONS).write_text(json.dumps(merged))
    for part in parts:
        for name in ("valid", "valid_outlines"):
            if (part / name).is_dir() and not (target / name).exists():
                (target / name).symlink_to((part / name).resolve())
    return {"train_images": len(merged["images"]), "halves": [p.name for p in parts if (p / "train").is_dir()]}


def smoke_stage(data: Path, device: str, work: Path, dry_run: bool) -> Callable[[float], dict]:
    def run(left: float) -> dict:
        configs = [BUNDLE / "configs" / "train.json", CONFIGS / "fast_gpu.json"]
        overrides = {
            "dataset_dir": str(data),
            "val_split": "train" if not (data / "valid").exists() else "valid",
            "device": f"$torch.device('{device}')",
            "train#trainer#max_epochs": 2,
            "progress_bar": False,
            "ckpt_dir": str(work / "smoke" / "models"),
            "output_dir": str(work / "smoke" / "eval"),
        }
        if dry_run:
            configs += [CONFIGS / "smoke_network.json"]
            overrides["batch_size"] = 4
        log = work / "smoke.log"
        code, timed_out = bundle_run(configs, overrides, log, min(left, 180))
        if code != 0:
            raise RuntimeError(f"exit {code}{' (time limit)' if timed_out else ''}: {log.read_text()[-1500:]}")
        return {"epochs": epochs_done(log), "best_val_dice": best_val_dice(log), "configs": [c.name for c in configs]}

    return run


def bench_stage(data: Path, device: str, dry_run: bool) -> Callable[[float], dict]:
    def run(left: float) -> dict:
        import gpu_training  # beside this script

        argv = ["--device", device, "--dataset-dir", str(data), "--split", "train", "--val-split", "train"]
        if dry_run:
            argv += ["--variants", "plain_fp32", "--iterations", "1", "--warmup", "1", "--max-images", "8"]
        else:
            # a whole fast training timed with its start-up apart; 20 epochs keep part 1 inside its deadline
            # (part 2's first stage is the full-length one)
            argv += ["--full-run", str(data), "--full-run-variants", "fast", "--full-run-split", "train"]
            argv += ["--epochs", "20", "--variants", "plain_fp32,plain_fast,default,fast"]
        return gpu_training.main(argv)

    return run


def train_stage(
    stage: Stage, data: Path, device: str, work: Path, out: Path, epochs_scale: float, dry_run: bool, budget_s: float
) -> Callable[[float], dict]:
    """One stage of the recipe through :func:`brainseg_monai.recipe.run_recipe`, stopped in its time budget.

    The recipe trains into ``work/recipe/<stage>`` (beside, not above, the data it reads) from the stage before;
    the bundle files made so far go into ``out`` as each stage ends, so a run cut short keeps them.
    """

    def run(left: float) -> dict:
        from brainseg_monai.recipe import run_recipe

        budget = min(left - 15, max(budget_s, 30.0))
        result = run_recipe(
            data,
            work / RECIPE_DIR,
            stages=[stage.name],
            device=device,
            epochs_scale=1e-3 if dry_run else epochs_scale,  # the dry run: one epoch per stage
            overrides={"batch_size": 4} if dry_run else None,
            progress_bar=False,
            time_limit_s=budget,
        )
        for name, path in result.bundle_models.items():
            shutil.copy2(path, out / name)
        record = result.stages[stage.name]
        return {
            "epochs_planned": record["epochs"],
            "epochs_done": record["epochs_done"],
            "completed": not record["stopped_early"],
            "time_budget_s": round(budget, 1),
            "best_val_dice": record["best_val_dice"],
            "configs": record["configs"],
            "weights": [name for name, source in result.sources.items() if source == stage.name] or None,
        }

    return run


def evaluate_stage(data: Path, device: str, work: Path, out: Path) -> Callable[[float], dict]:
    def run(left: float) -> dict:
        import torch

        from brainseg_monai.metrics import evaluate_split

        bundle = work / "bundle"
        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "*.ts"))
        for name in ("model.pt", "model_outline.pt", "model_box.pt"):
            if (out / name).is_file():
                shutil.copy2(out / name, bundle / "models" / name)
        outlines = data / "valid_outlines"
        split = data / "valid" if (data / "valid").exists() else data / "train"
        evaluation = evaluate_split(
            split,
            work / "evaluation",
            bundle_dir=bundle,
            device=torch.device(device),
            outlines_dir=outlines if outlines.exists() else None,
            gallery=False,
        )
        keys = (
            "n_images",
            "outline_dice_mean",
            "outline_dice_median",
            "containment_f1",
            "dice_mean",
            "detection_f1",
            "bbox_AP50",
            "fill_ratio_median",
            "n_images_no_tumor_found",
        )
        return {"split": split.name, **{k: evaluation.summary.get(k) for k in keys}}

    return run


def finish(out: Path, work: Path, session: Session) -> None:
    """Logs and curves into one archive, and the hashes of every file that goes back."""
    curves = {}
    for stage in RECIPE:
        eval_dir = work / RECIPE_DIR / stage.name / "eval"
        if eval_dir.is_dir():
            try:
                from brainseg_monai.report import training_curves

                training_curves(eval_dir, work / f"curves_{stage.name}.png")
                curves[stage.name] = f"curves_{stage.name}.png"
            except Exception as e:  # noqa: BLE001 - curves are a picture; the figures stand without them
                curves[stage.name] = f"not drawn: {e}"
    session.data["curves"] = curves
    archive = out / "logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(work.glob("*.log")) + sorted(work.glob("*.png")):
            tar.add(path, arcname=path.name)
        for stage in RECIPE:  # each recipe stage logs into its own folder
            if (work / RECIPE_DIR / stage.name / "train.log").is_file():
                tar.add(work / RECIPE_DIR / stage.name / "train.log", arcname=f"{stage.name}.log")
        csvs = sorted(work.glob("*/eval/*.csv")) + sorted((work / RECIPE_DIR).glob("*/eval/*.csv"))
        for path in csvs + sorted((work / "evaluation").glob("*.json")):
            tar.add(path, arcname=str(path.relative_to(work)))
    session.data["files"] = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p != session.path}
    session.save()


def run(part: str, out: Path, deadline_s: float, dry_run: bool, epochs_scale: float) -> dict[str, Any]:
    """One GPU command (``part`` 1 or 2), or both (``all``, for the dry run)."""
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if dry_run else "cuda"
    work = Path(os.environ.get("BRAINSEG_GPU_WORK", "/tmp/brainseg_gpu_session"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    session = Session(out, f"session_part{part}.json", deadline_s)
    session.data.update(part=part, dry_run=dry_run, device=device, command=" ".join(sys.argv))
    env = session.stage("environment", lambda left: check_environment(device), minimum_s=1)
    if env is None:
        return session.data
    if dry_run:
        data = work / "data"
        data.mkdir()
        (data / "train").symlink_to((BUNDLE / "sample_data" / "valid").resolve())
        (data / "valid").symlink_to((BUNDLE / "sample_data" / "valid").resolve())
        (data / "valid_outlines").symlink_to((BUNDLE / "sample_data" / "valid_outlines").resolve())
    else:
        parts = [CARRY / "a"] if part == "1" else [CARRY / "a", CARRY / "b"]
        data = work / "data"
        session.data["data"] = assemble_data(parts, data)
        if part == "2" and session.data["data"]["halves"] != ["a", "b"]:
            session.data["data"]["note"] = "the first half did not stay on the device (it went cold between calls)"
        session.save()
    if part in ("1", "all"):
        session.stage("smoke_fast_gpu", smoke_stage(data, device, work, dry_run), minimum_s=30)
        session.stage("benchmarks", bench_stage(data, device, dry_run), minimum_s=60)
    if part in ("2", "all"):
        reserve = 5 if dry_run else 60  # the evaluation and the archive after the stages
        stages = plan_stages(with_tumor_free=False)  # no real tumor-free slices are carried
        for index, stage in enumerate(stages):
            # the stage's share of the time left: a stage that ends early leaves its time to the next ones
            budget = stage.share / sum(s.share for s in stages[index:]) * (session.left() - reserve)
            ok = session.stage(
                f"train_{stage.name}",
                train_stage(stage, data, device, work, out, epochs_scale, dry_run, budget),
                minimum_s=5 if dry_run else 30,
            )
            if ok is None:
                break
        if (out / "model.pt").is_file():
            session.stage("evaluate", evaluate_stage(data, device, work, out), minimum_s=5 if dry_run else 20)
    finish(out, work, session)
    return session.data


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="wheels and carry-ready data, here on the CPU")
    p.add_argument("--dataset-dir", type=Path, default=SHARED_DATA)
    p.add_argument("--valid-images", type=int, default=VALID_IMAGES)
    p.add_argument("--no-download", action="store_true", help="use the wheels already in .whl/")
    r = sub.add_parser("run", help="one command on the GPU machine")
    r.add_argument("--part", choices=("1", "2", "all"), required=True)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/gpu_session")))
    r.add_argument("--deadline", type=float, default=500.0, help="seconds from start; stages stop before it")
    r.add_argument(
        "--epochs-scale", type=float, default=2.0, help="epochs per stage, as a multiple of the (CPU) recipe's"
    )
    r.add_argument("--dry-run", action="store_true", help="CPU, sample split, one epoch per stage")
    args = ap.parse_args(argv)
    if args.command == "prepare":
        if not (args.dataset_dir / "train" / ANNOTATIONS).is_file():
            print(f"{args.dataset_dir}: no train/{ANNOTATIONS} (the COCO dataset root)", file=sys.stderr)
            return 2
        report = prepare(args.dataset_dir, args.valid_images, download=not args.no_download)
        print(json.dumps(report, indent=2))
        if not report["fits"]:
            print(f"a call would carry more than {CARRY_LIMIT} bytes: fewer --valid-images", file=sys.stderr)
            return 1
        print("GPU commands (run them back to back, then release the GPU machine):")
        for call in device_commands():
            print(json.dumps(call))
        return 0
    data = run(args.part, args.out, args.deadline, args.dry_run, args.epochs_scale)
    failed = [name for name, s in data["stages"].items() if s.get("status") == "failed"]
    print(json.dumps({name: s.get("status") for name, s in data["stages"].items()}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
