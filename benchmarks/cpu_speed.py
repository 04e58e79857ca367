"""CPU speed and memory of the shipped bundle, printed as figures (not a test).

    python benchmarks/cpu_speed.py [--images DIR] [--n 50] [--threads 2] [--skip-original] [--skip-training]

Measures, in one run on the same machine:
1. inference per image, end to end through the bundle's own inference (JPEG in -> mask PNG out,
   ``python -m monai.bundle``'s workflow objects), network only, and each transform of the pre- and
   postprocessing (``stages_ms``: where the time outside the network goes); medians over N images;
   the network once more per image as trained, before ``prepare_for_inference`` folded its batch norms
   and reordered its weights (``network_unprepared_ms``; ``network_prepared_ratio``, the median of the
   per-image ratios, holds where the machine's speed drifts);
2. the same two figures for the original project's model (a from-scratch U-Net with 64..1024
   channels at 224 px, see REFERENCE.md), and the ratio;
3. training throughput (images/s) of the bundle's pipeline (CacheDataset, ThreadDataLoader,
   augmentation, SupervisedTrainer) against a plain PyTorch loop over the same network, batch
   and input size, and the pipeline's overhead;
4. peak resident memory of an inference process (a fresh subprocess).

The machine may be shared: compare ratios, not absolute times, across runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"


class OriginalUNet(nn.Module):
    """The original project's U-Net: double 3x3 conv blocks, 64..1024 channels, 4 poolings (31M params)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(5)]

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.down = nn.ModuleList([block(in_channels, chans[0])] + [block(chans[i], chans[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(4))])
        self.dec = nn.ModuleList([block(chans[i] * 2, chans[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def bench_bundle_inference(images: list[str], out_dir: str, model: str) -> dict[str, float]:
    """Per-image time through the bundle's inference workflow objects, and of the network alone."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["output_dir"] = out_dir
    parser["device"] = "$torch.device('cpu')"
    parser["ckpt_path"] = os.path.abspath(model)
    network = parser.get_parsed_content("network")  # as inference.json prepares it (prepare_for_inference)
    from scripts.handlers import load_weights

    unprepared = load_weights(parser.get_parsed_content("network_def"), model, "cpu")  # the same weights as trained
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    inferer = parser.get_parsed_content("inferer")
    e2e, net, net_unprepared = [], [], []
    stages: dict[str, list[float]] = {}

    def run_stages(transforms: list, d: dict) -> dict:
        """The Compose's transforms one by one, as it runs them, each timed under its class name."""
        for transform in transforms:
            t = time.perf_counter()
            d = transform(d)
            stages.setdefault(type(transform).__name__, []).append(time.perf_counter() - t)
        return d

    for k, path in enumerate(images):
        if k == 3:  # warm-up done
            stages.clear()
        t0 = time.perf_counter()
        d = run_stages(pre.transforms, {"image": path})
        with torch.inference_mode():
            t1 = time.perf_counter()
            d["pred"] = inferer(d["image"][None], network)[0]
            t2 = time.perf_counter()
        run_stages(post.transforms, d)  # softmax, invert the resize, mask, cascade, input check, write the PNG
        t3 = time.perf_counter()
        with torch.inference_mode():  # the same input through the network as trained, outside the end-to-end time
            t4 = time.perf_counter()
            inferer(d["image"][None], unprepared)
            t5 = time.perf_counter()
        if k >= 3:
            e2e.append(t3 - t0)
            net.append(t2 - t1)
            net_unprepared.append(t5 - t4)
    size = parser.get_parsed_content("spatial_size")
    params = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())  # before folding
    return {
        "end_to_end_ms": _median_ms(e2e),
        "network_ms": _median_ms(net),
        "network_unprepared_ms": _median_ms(net_unprepared),
        "network_prepared_ratio": round(statistics.median(a / b for a, b in zip(net, net_unprepared)), 3),
        "stages_ms": {name: round(_median_ms(times), 2) for name, times in stages.items()},
        "input_px": size[0],
        "params_M": params / 1e6,
    }


def bench_original_inference(images: list[str], out_dir: str, size: int = 224) -> dict[str, float]:
    """The original project's pipeline: JPEG -> 224 px -> U-Net 64..1024 -> sigmoid -> resize back -> PNG."""
    from PIL import Image

    network = OriginalUNet().eval()
    e2e, net = [], []
    for k, path in enumerate(images):
        t0 = time.perf_counter()
        with Image.open(path) as im:
            grey = im.convert("L")
            width, height = grey.size
            x = torch.from_numpy(np.asarray(grey.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0)
        with torch.inference_mode():
            t1 = time.perf_counter()
            prob = torch.sigmoid(network(x[None, None]))
            t2 = time.perf_counter()
            prob = nn.functional.interpolate(prob, size=(height, width), mode="bilinear")[0, 0]
        Image.fromarray(((prob > 0.5).numpy() * 255).astype(np.uint8)).save(
            os.path.join(out_dir, Path(path).stem + ".png")
        )
        t3 = time.perf_counter()
        if k >= 3:
            e2e.append(t3 - t0)
            net.append(t2 - t1)
        if k >= 15:  # it is slow; 12 timed images give a stable median
            break
    params = sum(p.numel() for p in network.parameters())
    return {"end_to_end_ms": _median_ms(e2e), "network_ms": _median_ms(net), "input_px": size, "params_M": params / 1e6}


def bench_training(dataset_dir: str, split: str, iterations: int = 30) -> dict[str, float]:
    """Images/s of the bundle's training pipeline against a plain PyTorch loop, same network/batch/size."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = dataset_dir
    parser["train_split"] = split
    parser["val_split"] = split
    parser["device"] = "$torch.device('cpu')"
    parser["use_amp"] = False
    parser["progress_bar"] = False
    batch = parser.get_parsed_content("batch_size")
    size = parser.get_parsed_content("spatial_size")
    # plain loop: random tensors already in memory, same network, loss and optimizer
    network = parser.get_parsed_content("network_def")
    loss_fn = parser.get_parsed_content("loss")
    opt = torch.optim.AdamW(network.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, *size)
    y = (torch.rand(batch, 1, *size) > 0.9).float()
    network.train()
    for _ in range(3):
        opt.zero_grad()
        loss_fn(network(x), y).backward()
        opt.step()
    t0 = time.perf_counter()
    for _ in range(iterations):
        opt.zero_grad()
        loss_fn(network(x), y).backward()
        opt.step()
    plain = batch * iterations / (time.perf_counter() - t0)
    # bundle pipeline: its own cached dataset, augmentation, loader, trainer step, postprocessing
    # and key metric; no handlers (validation and checkpoints are not per-step costs)
    from ignite.engine import Events

    parser["train#handlers"] = []
    trainer = parser.get_parsed_content("train#trainer")
    times: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: times.append(time.perf_counter()))
    trainer.state.max_epochs = max(1, -(-(iterations + 4) // len(trainer.data_loader)))
    trainer.run()
    steps = np.diff(times[3:])
    pipeline = batch / float(np.mean(steps))
    return {
        "batch": batch,
        "input_px": size[0],
        "plain_images_per_s": plain,
        "bundle_images_per_s": pipeline,
        "overhead_pct": 100.0 * (plain / pipeline - 1.0),
    }


def peak_memory_mb(images_dir: str, out_dir: str, model: str) -> float:
    """Peak RSS (MB) of a fresh process running the bundle's inference over a folder."""
    code = (
        "import resource, sys, runpy;"
        "sys.argv=['monai.bundle','run','--config_file','configs/inference.json','--dataset_dir',sys.argv[1],"
        "'--output_dir',sys.argv[2],'--ckpt_path',sys.argv[3],'--device','$torch.device(\"cpu\")'];"
        'exec(\'try:\\n runpy.run_module("monai.bundle", run_name="__main__")\\nexcept SystemExit: pass\');'
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, images_dir, out_dir, os.path.abspath(model)],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK")]
    if not line:
        raise RuntimeError(proc.stderr[-2000:])
    return int(line[-1].split()[1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--images",
        default=str(REPO.parent / "shared" / "data" / "brain_tumor_coco" / "valid"),
        help="folder of 640x640 JPEGs (default: ../shared valid split; falls back to the sample images)",
    )
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--model", default=str(BUNDLE / "models" / "model.pt"), help="weights of the bundle's network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.images if os.path.isdir(args.images) else str(BUNDLE / "sample_data" / "valid")
    images = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    images = (images * (1 + args.n // max(1, len(images))))[: args.n + 3]
    results: dict[str, object] = {"threads": args.threads, "images": len(images) - 3, "image_folder": folder}
    with tempfile.TemporaryDirectory() as tmp:
        results["bundle_inference"] = ours = bench_bundle_inference(images, tmp, args.model)
        print(json.dumps({"bundle_inference": ours}), flush=True)
        if not args.skip_original:
            results["original_inference"] = orig = bench_original_inference(images, tmp)
            results["speedup_end_to_end"] = orig["end_to_end_ms"] / ours["end_to_end_ms"]
            results["speedup_network"] = orig["network_ms"] / ours["network_ms"]
            print(json.dumps({"original_inference": orig}), flush=True)
        results["peak_rss_mb_inference"] = peak_memory_mb(str(BUNDLE / "sample_data" / "valid"), tmp, args.model)
    if not args.skip_training:
        split_root = (
            Path(folder).parent if (Path(folder) / "_annotations.coco.json").is_file() else BUNDLE / "sample_data"
        )
        split = Path(folder).name if (Path(folder) / "_annotations.coco.json").is_file() else "valid"
        results["training"] = bench_training(str(split_root), split)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
