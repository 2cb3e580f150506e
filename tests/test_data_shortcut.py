"""The shortcut check: global statistics, standardised mean differences and the global-statistics baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ladeda_lib.data.shortcut import STATISTICS, global_baseline, global_statistics, standardized_mean_differences


def test_statistics_of_a_flat_gray_image():
    images = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    stats = dict(zip(STATISTICS, global_statistics(images)[0], strict=True))
    assert stats["mean_red"] == pytest.approx(100) and stats["brightness"] == pytest.approx(100)
    assert stats["contrast"] == pytest.approx(0) and stats["saturation"] == pytest.approx(0)
    assert stats["noise_level"] == pytest.approx(0)


def test_noise_level_estimates_white_noise():
    g = torch.Generator().manual_seed(0)
    noise = (128 + 10 * torch.randn(1, 1, 128, 128, generator=g)).round().clamp(0, 255).to(torch.uint8)
    stats = dict(zip(STATISTICS, global_statistics(noise.expand(1, 3, 128, 128))[0], strict=True))
    assert stats["noise_level"] == pytest.approx(10, rel=0.1)
    assert stats["saturation"] == pytest.approx(0)


def test_statistics_reject_wrong_shapes():
    with pytest.raises(ValueError, match="N, 3, H, W"):
        global_statistics(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_standardized_mean_difference_hand_computed():
    stats = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 3.0], [3.0, 5.0]])
    labels = np.array([0, 0, 1, 1])
    d = standardized_mean_differences(stats, labels)
    # column 0: means 1 and 2, both variances 2 -> d = 1 / sqrt(2); column 1: means 1 and 4, variances 0 and 2
    assert list(d.values()) == pytest.approx([1 / np.sqrt(2), 3 / 1.0])
    with pytest.raises(ValueError, match="two real and two fake"):
        standardized_mean_differences(stats[:3], labels[:3])


def test_global_baseline_finds_a_global_difference_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    shifted = rng.standard_normal((200, 3)) + 3.0 * labels[:, None]
    same = rng.standard_normal((200, 3))
    assert global_baseline(shifted[::2], labels[::2], shifted[1::2], labels[1::2]).ap > 0.99
    assert global_baseline(same[::2], labels[::2], same[1::2], labels[1::2]).ap < 0.7
