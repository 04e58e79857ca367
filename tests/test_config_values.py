"""On/off values and numbers from configs and the command line: read as meant, or refused by name."""

from __future__ import annotations

import math

import pytest

from scripts.config_values import number, switch


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), ("true", True), ("false", False), (" FALSE ", False), ("True", True)],
)
def test_switch_reads_the_command_line_s_words(value, expected):
    assert switch(value, "resume") is expected


@pytest.mark.parametrize("value", ["no", "0", "", 1, 0, None, 0.0, [True]])
def test_switch_refuses_anything_else_by_name(value):
    with pytest.raises(ValueError, match=r"^resume: expected true or false, got "):
        switch(value, "resume")


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), ("0.25", 0.25), (3, 3.0), ("1e-3", 0.001)])
def test_number_reads_numbers_and_their_text(value, expected):
    assert number(value, "threshold") == expected


@pytest.mark.parametrize("value", ["abc", "", None, True, math.nan, "inf", "-inf", [0.5], "9" * 400])
def test_number_refuses_anything_else_by_name(value):
    with pytest.raises(ValueError, match=r"^threshold: expected a number, got "):
        number(value, "threshold")


def test_the_bundle_s_switches_take_the_command_line_s_false():
    """The post-processing's switches and the network preparation: "false" is off, not a non-empty string."""
    import torch

    from scripts.inference_network import prepare_for_inference
    from scripts.transforms import TumorProbabilityToMaskd

    post = TumorProbabilityToMaskd(keep_largest_component="false", fill_holes="true", threshold="0.3")
    assert post.keep_largest_component is False and post.fill_holes is True and post.threshold == 0.3
    with pytest.raises(ValueError, match="^min_confidence: expected a number, got 'abc'"):
        TumorProbabilityToMaskd(min_confidence="abc")
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert prepare_for_inference(network, "false") is network  # not optimized: the network itself
    with pytest.raises(ValueError, match="^optimize_networks: expected true or false"):
        prepare_for_inference(network, "yes")
