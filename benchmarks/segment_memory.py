"""Resident memory of ``brainseg segment`` over many images: it must stay flat (not a test).

    python benchmarks/segment_memory.py [--n 1000] [--size 640] [--threads 1] [--bad-every 0] [--keep DIR]

Fills a temporary folder with ``--n`` images (the sample JPEGs, copied round-robin, resized to
``--size`` px), runs ``brainseg segment`` on it in a subprocess, reads the mask paths it
streams on stdout, and prints the subprocess's resident set size (VmRSS, from /proc) when the
10th and the last mask come out, and every 100 masks. With ``--bad-every K`` every K-th file is
a corrupt PNG (reported, skipped, summarised) to show that failures leak nothing either.

Uses ``bundle/models/model.pt`` when present; otherwise trains the tiny smoke model first
(``configs/smoke_network.json``, one epoch on the sample split, about a minute on a CPU).
Linux only (reads /proc/<pid>/status). A few minutes for 1,000 images at 640 px on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
SMOKE_NETWORK = REPO / "configs" / "smoke_network.json"
SMOKE_CPU = REPO / "configs" / "smoke_cpu.json"


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def make_images(folder: Path, n: int, size: int, bad_every: int) -> None:
    from PIL import Image

    samples = sorted((BUNDLE / "sample_data" / "valid").glob("*.jpg"))
    if not samples:
        raise SystemExit("no sample JPEGs in bundle/sample_data/valid")
    images = [Image.open(p).convert("L").resize((size, size)) for p in samples]
    folder.mkdir(parents=True)
    for i in range(n):
        name = folder / f"img_{i:05d}.png"
        if bad_every and i % bad_every == bad_every - 1:
            name.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(512))
        else:
            images[i % len(images)].save(name)


def model_args(work: Path, threads: int) -> list[str]:
    """``--model``/``--config`` for the segment run: the shipped weights, or a freshly trained smoke model."""
    shipped = BUNDLE / "models" / "model.pt"
    if shipped.is_file():
        print(f"model: {shipped}")
        return []
    print("model: bundle/models/model.pt is absent; training the smoke model (1 epoch)...", flush=True)
    out = work / "smoke"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"['configs/train.json','{SMOKE_NETWORK}','{SMOKE_CPU}']",
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(out / "eval"),
            "--train#trainer#max_epochs",
            "1",
        ],
        cwd=BUNDLE,
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    return ["--model", str(out / "models" / "model.pt"), "--config", str(SMOKE_NETWORK)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--size", type=int, default=640, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the segment process")
    parser.add_argument("--bad-every", type=int, default=0, help="make every K-th file a corrupt PNG (0: none)")
    parser.add_argument("--keep", help="keep images and masks in this folder instead of a temporary one")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("Linux only: reads VmRSS from /proc/<pid>/status")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="segment_memory_"))
    try:
        images, masks = work / "images", work / "masks"
        make_images(images, args.n, args.size, args.bad_every)
        extra = model_args(work, args.threads)
        cmd = [
            sys.executable,
            "-m",
            "brainseg_monai.cli",
            "segment",
            str(images),
            "--output-dir",
            str(masks),
            "--device",
            "cpu",
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
        start = time.monotonic()
        err_log = open(work / "segment.stderr", "w+")  # a file: a full stderr pipe would stall the run
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_log, text=True, env=env)
        expected = args.n - (args.n // args.bad_every if args.bad_every else 0)
        marks = sorted({10, expected, *range(100, expected, 100)})
        samples: dict[int, float] = {}
        count = 0
        for _ in proc.stdout:  # one mask path per line, printed as each mask is written
            count += 1
            if count in marks:
                samples[count] = rss_mib(proc.pid)
                print(
                    f"image {count:>6}: RSS {samples[count]:8.1f} MiB  ({time.monotonic() - start:6.1f} s)", flush=True
                )
        proc.wait()
        err_log.seek(0)
        stderr = err_log.read()
        err_log.close()
        summary = [line for line in stderr.splitlines() if line.startswith(("segmented", "FAILED"))]
        print(f"exit status {proc.returncode}; {count} masks streamed; " + (summary[-1] if summary else ""))
        if 10 in samples and count in samples:
            growth = samples[count] - samples[10]
            print(
                f"RSS at image 10: {samples[10]:.1f} MiB, at image {count}: {samples[count]:.1f} MiB, "
                f"growth {growth:+.1f} MiB ({growth / max(count - 10, 1) * 1024:+.1f} KiB per image)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
