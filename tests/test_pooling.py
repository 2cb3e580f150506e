"""Top-K pooling: mean at K = all, max at K = 1, fractions, gradients."""

import pytest
import torch

from ladeda_lib.models import DEFAULT_TOPK, LaDeDa, TinyLaDeDa, TopKPool


def test_k_all_is_the_mean_and_k_one_is_the_max():
    x = torch.randn(3, 1, 31, 31)
    assert torch.allclose(TopKPool("all")(x), x.flatten(1).mean(1, keepdim=True))
    assert torch.allclose(TopKPool(None)(x), x.flatten(1).mean(1, keepdim=True))
    assert torch.allclose(TopKPool(1)(x), x.flatten(1).max(1, keepdim=True).values)


def test_fraction_and_count():
    x = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    assert TopKPool(0.1)(x).item() == pytest.approx((99 + 98 + 97 + 96 + 95 + 94 + 93 + 92 + 91 + 90) / 10)
    assert TopKPool(3)(x).item() == pytest.approx(98.0)
    assert TopKPool(0.1).num_selected(961) == 97  # ceil(96.1)
    assert TopKPool(5000).num_selected(961) == 961  # capped at the grid


@pytest.mark.parametrize("k", [1, 7, 0.25, "all"])
def test_gradients_flow_through_pooling(k):
    x = torch.randn(2, 1, 9, 9, requires_grad=True)
    TopKPool(k)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    selected = TopKPool(k).num_selected(81)
    assert int((x.grad[0] != 0).sum()) == selected


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.5, "lots"])
def test_bad_k_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        TopKPool(bad)


def test_default_k_is_shared_by_teacher_and_student():
    assert LaDeDa(width=4).pool.k == TinyLaDeDa().pool.k == DEFAULT_TOPK


def test_pooling_warmup_starts_at_the_mean_and_reaches_k():
    pool = TopKPool(0.1)
    counts = [pool.warmup(15876, epoch, 3) for epoch in range(5)]
    assert counts[0] == 15876  # first epoch: every patch
    assert counts[0] > counts[1] > counts[2] > counts[3]  # then geometrically fewer
    assert counts[3] == counts[4] == pool.num_selected(15876) == 1588  # K from the last warm-up epoch on
    assert counts[1] == round(15876 * (1588 / 15876) ** (1 / 3))
    assert [pool.warmup(15876, e, 0) for e in range(2)] == [1588, 1588]  # no warm-up: K throughout
    assert TopKPool("all").warmup(100, 0, 3) == 100 and TopKPool(5).warmup(100, 0, 2) == 100
