"""Training-time augmentation: off by default, deterministic from a generator, images only."""

import pytest
import torch

from ladeda_lib.data.augment import AugmentConfig, AugmentedTask, augment_batch, with_augmentation


def _batch(n: int = 6, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)


def test_default_is_off_and_returns_the_batch_itself():
    cfg = AugmentConfig()
    assert not cfg.enabled
    x = _batch()
    assert augment_batch(x, cfg, torch.Generator().manual_seed(0)) is x


def test_same_generator_state_gives_the_same_batch_and_another_seed_another():
    cfg = AugmentConfig.platform()
    x = _batch()
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_probability_one_degrades_every_image():
    cfg = AugmentConfig(p_jpeg=1.0, jpeg_quality=(30, 30))
    x = _batch()
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert all(not torch.equal(a, b) for a, b in zip(x, y, strict=True))
    cfg = AugmentConfig(p_rescale=1.0, rescale_factor=(0.5, 0.5))
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert y.shape == x.shape  # back to the batch size through the shared geometry
    hf = lambda t: (t.float()[..., 1:] - t.float()[..., :-1]).abs().mean()  # noqa: E731
    assert hf(y) < 0.7 * hf(x)  # detail lost in the downscale


def test_parse_and_round_trip():
    assert AugmentConfig.parse("off") == AugmentConfig()
    assert AugmentConfig.parse("on") == AugmentConfig.platform()
    cfg = AugmentConfig.parse("p_jpeg=0.8,jpeg_quality=30:90,p_blur=0")
    assert cfg.p_jpeg == 0.8 and cfg.jpeg_quality == (30, 90) and cfg.p_blur == 0.0
    assert cfg.p_rescale == AugmentConfig.platform().p_rescale
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="keys"):
        AugmentConfig.parse("p_sharpen=1")
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(p_jpeg=2)
    with pytest.raises(ValueError, match="range"):
        AugmentConfig(jpeg_quality=(90, 30))


class _Task:
    def __init__(self) -> None:
        self.images = _batch(8)
        self.name = "inner"

    def plan(self, generator, batch_size):
        return list(torch.randperm(8, generator=generator).split(batch_size))

    def fetch(self, idx):
        return {"images": self.images[idx], "teacher": self.images[idx].float()}


def test_augmented_task_changes_images_only_and_is_deterministic():
    task = _Task()
    assert with_augmentation(task, AugmentConfig()) is task
    wrapped = with_augmentation(task, AugmentConfig(p_jpeg=1.0))
    assert isinstance(wrapped, AugmentedTask) and wrapped.name == "inner"
    plan = wrapped.plan(torch.Generator().manual_seed(0), 4)
    again = wrapped.plan(torch.Generator().manual_seed(0), 4)
    assert [(s.tolist(), seed) for s, seed in plan] == [(s.tolist(), seed) for s, seed in again]
    batch = wrapped.fetch(plan[0])
    clean = task.fetch(plan[0][0])
    assert torch.equal(batch["teacher"], clean["teacher"])  # targets stay those of the clean image
    assert not torch.equal(batch["images"], clean["images"])
    assert torch.equal(batch["images"], wrapped.fetch(plan[0])["images"])
