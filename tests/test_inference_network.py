"""Networks made ready for inference (``scripts/inference_network.py``): the shipped networks folded and
reordered give the shipped results, and the folding rule touches only a batch norm fed by a convolution."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch
from torch import nn

from conftest import BUNDLE
from scripts.handlers import load_weights
from scripts.inference_network import fold_batch_norms, prepare_for_inference
from scripts.predictor import BundlePredictor
from scripts.sequence_check import SequenceClassifier

SAMPLES = sorted(glob.glob(os.path.join(BUNDLE, "sample_data", "valid", "*.jpg")))


def _norms(network: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())


def _with_running_statistics(network: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms whose running mean, variance, weight and bias are not the identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))
    return network.eval()


def test_the_shipped_networks_prepared_give_the_shipped_results():
    """The bundle's predictor, as ``brainseg segment``, the Slicer worker and MONAI Label build it: its networks
    hold no batch norm and channels-last weights, and on the sample slices the masks, verdicts and components
    are those of the unprepared networks (``optimize_networks`` off), the scores equal to float rounding."""
    prepared = BundlePredictor(BUNDLE)
    plain = BundlePredictor(BUNDLE, overrides={"optimize_networks": False})
    networks = {
        "first": (prepared.network, plain.network),
        "outline": (
            prepared.parser.get_parsed_content("refine_network"),
            plain.parser.get_parsed_content("refine_network"),
        ),
        "sequence": (
            prepared.parser.get_parsed_content("sequence_network"),
            plain.parser.get_parsed_content("sequence_network"),
        ),
    }
    for name, (fast, slow) in networks.items():
        assert _norms(fast) == 0 and _norms(slow) > 0, name
        conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous(), name
        assert not fast.training and not slow.training, name
    assert len(SAMPLES) >= 5
    for path in SAMPLES:
        a, b = prepared.predict_file(path, details=True), plain.predict_file(path, details=True)
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=path)
        np.testing.assert_allclose(a.probability, b.probability, atol=1e-4, err_msg=path)
        assert a.tumor_score == pytest.approx(b.tumor_score, abs=1e-4)
        assert [c["bbox"] for c in a.components] == [c["bbox"] for c in b.components]
        assert a.input_unusual == b.input_unusual
        assert a.input_other_sequence == pytest.approx(b.input_other_sequence, abs=1e-4)
        np.testing.assert_array_equal(a.possible_mask, b.possible_mask, err_msg=path)


@pytest.mark.parametrize("build", ["unet", "sequence_check"])
def test_folding_keeps_the_function_of_the_bundles_networks(build):
    """Every batch norm of the bundle's U-Net (convolutions and transposed convolutions, nested in MONAI's
    ``Convolution`` and ``ADN``) and of the sequence check is folded; the outputs stay within float rounding."""
    from monai.bundle import ConfigParser

    if build == "unet":
        parser = ConfigParser()
        parser.read_config(os.path.join(BUNDLE, "configs", "inference.json"))
        network = parser.get_parsed_content("network_def")
    else:
        network = SequenceClassifier()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    network = _with_running_statistics(network)
    norms = _norms(network)
    with torch.inference_mode():
        expected = network(x)
        folded = fold_batch_norms(network)
        assert folded == norms > 0 and _norms(network) == 0
        torch.testing.assert_close(network(x), expected, atol=1e-4, rtol=1e-4)


def test_only_a_norm_fed_by_a_convolution_of_its_dimension_is_folded():
    network = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),  # folded
        nn.ReLU(),
        nn.BatchNorm2d(4),  # after an activation: stays
        nn.Conv2d(4, 4, 1),
        nn.Sequential(nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())),  # the first module of nested ones: folded
        nn.ConvTranspose2d(4, 4, 2, stride=2),
        nn.BatchNorm2d(4),  # folded, as a transposed convolution
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 8),
        nn.BatchNorm1d(8),  # after a linear layer: stays
    )
    network = _with_running_statistics(network)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = network(x)
        assert fold_batch_norms(network) == 3
        torch.testing.assert_close(network(x), expected, atol=1e-5, rtol=1e-5)
    assert isinstance(network[1], nn.Identity) and isinstance(network[5][0][0], nn.Identity)
    assert isinstance(network[7], nn.Identity)
    assert isinstance(network[3], nn.BatchNorm2d) and isinstance(network[10], nn.BatchNorm1d)
    mismatched = _with_running_statistics(nn.Sequential(nn.Conv3d(1, 4, 1), nn.BatchNorm2d(4)))
    assert fold_batch_norms(mismatched) == 0  # a 3D convolution does not feed a 2D norm's statistics


def test_folding_a_network_in_training_mode_is_refused():
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(network)
    assert isinstance(network[1], nn.BatchNorm2d)  # nothing changed


def test_prepare_for_inference_leaves_the_loaded_network_as_it_was():
    """The prepared network is a copy: the original still loads and saves the bundle's weights files."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLE, "configs", "inference.json"))
    network = load_weights(parser.get_parsed_content("network_def"), os.path.join(BUNDLE, "models", "model.pt"))
    keys = set(network.state_dict())
    prepared = prepare_for_inference(network)
    assert prepared is not network and set(network.state_dict()) == keys and _norms(network) > 0
    assert not set(prepared.state_dict()) >= keys  # no batch norm parameters left in the copy
    weight = next(m for m in prepared.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1).weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    load_weights(network, os.path.join(BUNDLE, "models", "model.pt"))  # still fits
    network.train()
    assert prepare_for_inference(network, optimize=False) is network and not network.training


def test_an_optimize_switch_that_is_not_true_or_false_is_refused_by_name():
    """``--optimize_networks false`` on a command line arrives as the text "false": read as false
    (``scripts.config_values.switch``); anything but true or false is refused by name."""
    assert BundlePredictor(BUNDLE, overrides={"optimize_networks": "false"}) is not None
    for value in ("no", 0, None):
        with pytest.raises(ValueError, match="optimize_networks: expected true or false"):
            BundlePredictor(BUNDLE, overrides={"optimize_networks": value})
