"""configs/fast_gpu.json: the one-GPU fast training override, checked on a CPU.

Its structure is checked as parsed for a CUDA device (no GPU needed: nothing is put on it), so drift in
train.json's ids and list indices it overrides is caught; then it trains for real on the CPU through
``python -m monai.bundle run``; and a training step is audited for operators that wait for the device.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandomizableTrait, ToDeviced, Transform

from conftest import BUNDLE, CONFIGS, REPO, SMOKE_NETWORK, run_bundle

TRAIN = BUNDLE / "configs" / "train.json"
FAST = CONFIGS / "fast_gpu.json"
SMOKE_CPU = CONFIGS / "smoke_cpu.json"

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_training  # noqa: E402


def _parser(device: str, *extra: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(TRAIN), str(FAST), *map(str, extra)])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = f"$torch.device('{device}')"
    return parser


def test_override_matches_the_train_json_it_layers_on():
    """The ids and list indices fast_gpu.json overrides still mean what it assumes in train.json."""
    train = json.loads(TRAIN.read_text())
    fast = json.loads(FAST.read_text())
    # ToDeviced goes between the deterministic and the random transforms of train.json's Compose, and after
    # the validation preprocessing; the lists themselves are left to other overrides (box supervision)
    assert (
        train["train"]["preprocessing"]["transforms"] == "$@train#deterministic_transforms + @train#random_transforms"
    )
    assert fast["train#preprocessing#transforms"] == (
        "$@train#deterministic_transforms + [@to_device] + @train#random_transforms"
    )
    assert train["validate"]["dataset"]["transform"] == "@validate#preprocessing"
    assert not any(k.startswith(("train#deterministic_transforms", "validate#preprocessing")) for k in fast)
    # the random transforms it edits by index
    rand = train["train"]["random_transforms"]
    assert rand[2]["_target_"] == "RandAffined"
    assert rand[5]["_target_"] == "RandGaussianNoised" and (rand[5]["std"], rand[5]["prob"]) == (0.02, 0.2)
    assert fast["train#random_transforms#5"]["prob"] == 0.2 and "0.02" in fast["train#random_transforms#5"]["func"]
    # the handlers it edits (5, 6) and the ones the benchmark disables (3, 4)
    handlers = train["train"]["handlers"]
    assert [h["_target_"] for h in handlers[3:7]] == [
        "ValidationHandler",
        "scripts.handlers.TrainingStateSaver",
        "StatsHandler",
        "TensorBoardStatsHandler",
    ]
    assert handlers[5]["tag_name"] == handlers[6]["tag_name"] == "train_loss"
    # comparable with train.json: same schedule, batch, learning rate, size, network and loss
    for key in ("train#trainer#max_epochs", "batch_size", "learning_rate", "spatial_size", "network_def", "loss"):
        assert not any(k == key or k.startswith(key + "#") for k in fast), key


def test_override_parsed_for_cuda_has_the_fast_properties():
    parser = _parser("cuda:0")
    cuda = torch.device("cuda:0")
    get = parser.get_parsed_content
    assert get("on_cuda") is True and get("use_amp") is True
    for engine in ("train#trainer", "validate#evaluator"):
        assert get(f"{engine}#amp") is True
        assert get(f"{engine}#amp_kwargs") == {"dtype": torch.bfloat16}
        assert get(f"{engine}#to_kwargs") == {"memory_format": torch.channels_last}
    assert get("train#trainer#compile") is True
    assert get("train#trainer#key_train_metric") is None and get("train#trainer#postprocessing") is None
    assert get("train#trainer#decollate") is False
    assert parser["optimizer"]["fused"] is True
    assert get("train#dataloader#num_workers") == 0 and get("validate#dataloader#num_workers") == 0
    assert parser["train#dataloader"]["_target_"] == "ThreadDataLoader"
    # training and validation data are cached on the device: ToDeviced ends what CacheDataset caches
    det = _assert_cached_on(parser, cuda)
    pre: Compose = get("train#preprocessing")
    # augmentation on the device: the affine grid and resampling, and the noise drawn there
    first_random = len(det) + 1  # after ToDeviced
    rand = list(pre.transforms[first_random:])
    assert rand == list(get("train#random_transforms"))
    affine = rand[2]
    assert type(affine).__name__ == "RandAffined" and affine.rand_affine.rand_affine_grid.device == cuda
    noise = rand[5]
    assert type(noise).__name__ == "RandLambdad"
    x = torch.ones(1, 8, 8)
    y = noise.func[0](x)  # drawn with torch on the device of x
    assert y.shape == x.shape and 0 < (y - x).abs().max() < 0.2
    # loss logged every N iterations only
    every = get("loss_log_interval")
    assert every > 1
    assert parser["train#handlers#5#iteration_log"] == parser["train#handlers#6#iteration_log"] == "@log_filter"
    log_filter = get("log_filter")
    assert [i for i in range(1, 3 * every + 1) if log_filter(None, i)] == [every, 2 * every, 3 * every]
    # the trainer does not decollate, so its output is one dict per step: the loss is read from it as a scalar
    for i in (5, 6):
        assert get(f"train#handlers#{i}#output_transform")({"loss": torch.tensor(0.5)}) == 0.5


def _cached_part(compose: Compose) -> list:
    """The transforms whose output CacheDataset caches: those before the first random one."""
    end = compose.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    return list(compose.transforms if end is None else compose.transforms[:end])


def _assert_cached_on(parser: ConfigParser, device: torch.device) -> list:
    """ToDeviced(device) ends the cached part of training and validation data, once; returns the deterministic list."""
    get = parser.get_parsed_content
    det = get("train#deterministic_transforms")
    for ds in ("train#dataset", "validate#dataset"):
        assert parser[ds]["_target_"] == "CacheDataset" and get(f"{ds}#cache_rate") == 1.0
        cached = _cached_part(get(f"{ds}#transform"))
        assert isinstance(cached[-1], ToDeviced) and cached[-1].converter.device == device, ds
        assert sum(isinstance(t, ToDeviced) for t in cached) == 1, ds
    assert _cached_part(get("train#dataset#transform"))[:-1] == list(det)
    return det


def test_override_composes_with_configs_that_change_the_transform_lists(tmp_path):
    """Layered after a config that replaces the deterministic and validation transforms, its ToDeviced still
    ends both cached parts, after that config's own transforms (e.g. configs/box_supervised.json)."""
    other = tmp_path / "other.json"
    lists = "$[@load_image, @annotations_to_mask] + @image_transforms + [@resize_label, @marker]"
    other.write_text(
        json.dumps(
            {
                "marker": {"_target_": "Identityd", "keys": "image"},
                "train#deterministic_transforms": lists,
                "validate#preprocessing#transforms": lists,
            }
        )
    )
    parser = ConfigParser()
    parser.read_config([str(TRAIN), str(other), str(FAST)])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = "$torch.device('cuda:0')"
    _assert_cached_on(parser, torch.device("cuda:0"))
    marker = parser.get_parsed_content("marker")
    for ds in ("train#dataset", "validate#dataset"):
        assert _cached_part(parser.get_parsed_content(f"{ds}#transform"))[-2] is marker


def test_override_parsed_for_cpu_turns_cuda_only_parts_off():
    get = _parser("cpu").get_parsed_content
    assert get("on_cuda") is False and get("use_amp") is False
    assert get("train#trainer#compile") is False
    assert get("memory_format") == torch.contiguous_format


@pytest.mark.slow
def test_fast_override_trains_on_cpu(tmp_path):
    proc = run_bundle(
        "--config_file",
        f"['configs/train.json','{FAST}','{SMOKE_NETWORK}','{SMOKE_CPU}']",
        "--device",
        "$torch.device('cpu')",
        "--loss_log_interval",
        "2",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    parser = ConfigParser()
    parser.read_config([str(TRAIN), str(SMOKE_NETWORK)])
    parser.get_parsed_content("network_def").load_state_dict(state)  # a plain state dict of the network
    dice = [float(v) for v in re.findall(r"val_mean_dice best value: ([-\d.eE]+)", log)]
    assert len(dice) == 2 and 0.0 <= dice[-1] <= 1.0  # validated after each of the 2 epochs
    assert "train_mean_dice" not in log  # no per-iteration train metric
    # 2 epochs of 3 iterations, the loss logged at iterations 2, 4 and 6 only, to the log and to TensorBoard
    assert len(re.findall(r"train_loss: [\d.]+", log)) == 3, log[-4000:]
    assert "non-scalar" not in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in (tmp_path / "eval").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "train_loss" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("train_loss")]
    assert sorted(steps) == [2, 4, 6]
    assert (tmp_path / "models" / "checkpoint_latest.pt").is_file()


@pytest.mark.slow
def test_fast_step_waits_for_no_device_value(tmp_path):
    """CPU proxy of a sync audit: the default step reads device values (train metric, loss log), the fast one none."""
    args = argparse.Namespace(
        extra_config=[str(SMOKE_NETWORK), str(SMOKE_CPU)],
        compile_mode="default",
        dataset_dir=str(BUNDLE / "sample_data"),
        split="valid",
        max_images=None,
        audit_iterations=2,
    )
    device = torch.device("cpu")
    fast = gpu_training.measure_bundle("fast", device, str(tmp_path / "fast"), args, iterations=2, warmup=1)
    default = gpu_training.measure_bundle("default", device, str(tmp_path / "default"), args, iterations=2, warmup=1)
    assert fast["host_syncs_per_step_cpu_proxy"] == 0, fast["host_sync_ops_cpu_proxy"]
    assert default["host_syncs_per_step_cpu_proxy"] > 0  # the detector sees what the override removes
    assert fast["images_per_s"] > 0 and fast["loader_images_per_s"] > 0 and not fast["compiled"]


def test_counting_matches_a_hand_count():
    """FLOPs and saved bytes of one 3x3 convolution, 1 -> 8 channels, 16x16 px (input needs no gradient)."""
    net = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
    count = gpu_training.count_training_step(net, [16, 16], batch=2)
    macs = 8 * 9 * 16 * 16
    assert count["forward_gflop_per_image"] * 1e9 == pytest.approx(2 * macs)
    assert count["backward_gflop_per_image"] * 1e9 == pytest.approx(2 * macs)  # weight gradient only
    assert count["saved_activations_mb_per_image_fp32"] * 1e6 == pytest.approx(16 * 16 * 4)  # the input
    floor = gpu_training.floor_per_image(count, batch=2, peak_flops=1e12, peak_bytes_per_s=1e9)
    assert floor["floor_us_per_image"] == max(floor["compute_floor_us_per_image"], floor["memory_floor_us_per_image"])
