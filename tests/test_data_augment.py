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
    assert [(s.tolist(), seed, c) for s, seed, c in plan] == [(s.tolist(), seed, c) for s, seed, c in again]
    batch = wrapped.fetch(plan[0])
    clean = task.fetch(plan[0][0])
    assert torch.equal(batch["teacher"], clean["teacher"])  # targets stay those of the clean image
    assert not torch.equal(batch["images"], clean["images"])
    assert torch.equal(batch["images"], wrapped.fetch(plan[0])["images"])


def test_augmentation_warmup_starts_clean_and_ramps_up():
    config = AugmentConfig.platform()
    wrapped = with_augmentation(_Task(), config, warmup_epochs=2)
    seen = []
    for epoch in range(4):
        wrapped.begin_epoch(epoch)
        seen.append(wrapped.plan(torch.Generator().manual_seed(0), 4)[0][2])
    assert not seen[0].enabled  # the first epoch is clean
    assert seen[1].p_rescale == seen[1].p_jpeg == 0.5 and seen[1].jpeg_quality == config.jpeg_quality
    assert seen[2] == seen[3] == config
    spec = wrapped.plan(torch.Generator().manual_seed(0), 4)[0]
    wrapped.begin_epoch(0)
    clean = wrapped.plan(torch.Generator().manual_seed(0), 4)[0]
    assert torch.equal(wrapped.fetch(clean)["images"], _Task().fetch(clean[0])["images"])
    assert not torch.equal(wrapped.fetch(spec)["images"], _Task().fetch(spec[0])["images"])


class _ValTask(_Task):
    """Validation whose AP is the share of unchanged pixels: 1 on the clean split, lower on a degraded copy."""

    def __init__(self) -> None:
        super().__init__()
        self.val_images, self.calls = _batch(6), []

    def validate(self, model, images=None):
        self.calls.append(images)
        seen = self.val_images if images is None else images
        return {"loss": 0.5, "ap": float((seen == self.val_images).float().mean())}


def test_validation_on_clean_and_degraded_views():
    task = _ValTask()
    assert with_augmentation(task, AugmentConfig.platform()).validate(None) == {"loss": 0.5, "ap": 1.0}
    assert task.calls == [None]  # "clean" (the default) validates on the split only
    wrapped = with_augmentation(task, AugmentConfig.platform(), warmup_epochs=4, val_views="clean+degraded")
    wrapped.begin_epoch(0)  # the copy uses the full setting even during the warm-up's clean first epoch
    metrics = wrapped.validate(None)
    degraded = task.calls[-1]
    assert degraded is not None and degraded.shape == task.val_images.shape and degraded.dtype == torch.uint8
    assert metrics["ap_clean"] == 1.0 and metrics["ap_degraded"] < 0.5
    assert metrics["ap"] == (1.0 + metrics["ap_degraded"]) / 2  # the mean picks the best checkpoint
    assert wrapped.validate(None) == metrics and task.calls[-1] is degraded  # degraded once, kept
    other = with_augmentation(_ValTask(), AugmentConfig.platform(), val_views="clean+degraded")
    assert torch.equal(other.degraded_val(), degraded)  # a fixed seed: the same copy in every run
    with pytest.raises(ValueError, match="clean\\+degraded"):
        AugmentedTask(task, AugmentConfig.platform(), val_views="degraded")


def test_val_views_config_needs_augmentation():
    from ladeda_lib.distill import StudentTrainConfig

    assert (
        StudentTrainConfig(augment=AugmentConfig.platform(), val_views="clean+degraded").val_views == "clean+degraded"
    )
    with pytest.raises(ValueError, match="turn --augment on"):
        StudentTrainConfig(val_views="clean+degraded")
    with pytest.raises(ValueError, match="expected one of"):
        StudentTrainConfig(augment=AugmentConfig.platform(), val_views="noisy")


# --- the hooks in training: teacher and student runs on tiny synthetic data --------------------------------
def _tensors(n: int, seed: int):
    from ladeda_lib.data.tensors import ImageTensors

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 16, 16, generator=g), size=64)
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float()
    images = smooth * 200 + labels[:, None, None, None] * checker * 40
    return ImageTensors(images.clamp(0, 255).to(torch.uint8), labels, [])


@pytest.fixture
def tiny(tmp_path):
    from ladeda_lib.data.layouts import DatasetIndex
    from ladeda_lib.distill import TrainingData
    from ladeda_lib.models import LaDeDa

    torch.manual_seed(0)
    return TrainingData(DatasetIndex(tmp_path, "folder", []), _tensors(8, 0), _tensors(4, 1)), LaDeDa(width=2)


def test_student_training_with_augmentation_is_recorded_deterministic_and_different(tmp_path, tiny):
    from ladeda_lib.checkpoints import load_checkpoint
    from ladeda_lib.distill import StudentTrainConfig, train_student

    data, teacher = tiny
    on = AugmentConfig(p_jpeg=1.0, jpeg_quality=(30, 60), p_rescale=0.5)

    def run(name, augment):
        cfg = StudentTrainConfig(
            output=tmp_path / name, cache_dir=tmp_path / "cache", epochs=1, batch_size=4, augment=augment
        )
        return train_student(cfg, teacher=teacher, data=data, progress=False)

    plain, a, b = run("plain", AugmentConfig()), run("a", on), run("b", on)
    meta = load_checkpoint(a.final_path).metadata
    assert AugmentConfig.from_dict(meta["config"]["augment"]) == on
    assert not AugmentConfig.from_dict(load_checkpoint(plain.final_path).metadata["config"]["augment"]).enabled
    sa, sb, sp = a.model.state_dict(), b.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same augmented run
    assert any(not torch.equal(sa[k], sp[k]) for k in sa if sa[k].is_floating_point())


def test_student_run_selects_on_clean_and_degraded_val(tmp_path, tiny):
    from ladeda_lib.distill import StudentTrainConfig, train_student

    data, teacher = tiny
    cfg = StudentTrainConfig(
        output=tmp_path / "v",
        cache_dir=tmp_path / "cache",
        epochs=2,
        batch_size=4,
        augment=AugmentConfig.platform(),
        val_views="clean+degraded",
    )
    result = train_student(cfg, teacher=teacher, data=data, progress=False)
    for row in result.history:
        assert row["val_ap"] == pytest.approx((row["val_ap_clean"] + row["val_ap_degraded"]) / 2)
    assert result.best["val_ap"] == max(row["val_ap"] for row in result.history)


def test_teacher_training_with_augmentation_records_it(tmp_path, tiny):
    from ladeda_lib.distill import TeacherTrainConfig, train_teacher

    data, _ = tiny
    cfg = TeacherTrainConfig(
        output=tmp_path / "t.pt", width=2, epochs=1, batch_size=4, crop_size=32, augment=AugmentConfig.platform()
    )
    ckpt = train_teacher(cfg, data=data, progress=False)
    assert AugmentConfig.from_dict(ckpt.metadata["config"]["augment"]) == AugmentConfig.platform()


def test_augment_flag_on_the_training_commands():
    from ladeda_lib.cli import build_parser

    parser = build_parser(["ladeda_lib.distill.cli"])
    for command in ("train-teacher", "train-student", "train-student-two-stage"):
        assert parser.parse_args([command]).augment == AugmentConfig()
        assert parser.parse_args([command, "--augment"]).augment == AugmentConfig.platform()
        assert parser.parse_args([command, "--augment", "p_jpeg=1"]).augment.p_jpeg == 1.0


def test_pipeline_refuses_a_bad_augment_before_training(tmp_path):
    from ladeda_lib.pipeline import PipelineConfig, run_pipeline

    with pytest.raises(ValueError, match="--augment"):
        run_pipeline(PipelineConfig(augment="p_sharpen=1", output=tmp_path, progress=False))
    assert not any(tmp_path.iterdir())  # nothing was started


def test_platform_preset_spans_every_toy_platform_without_blur():
    from ladeda_lib.data.toy import PLATFORM_STYLES

    cfg = AugmentConfig.platform()
    assert cfg.p_blur == 0.0 and cfg.p_rescale == 1.0 and cfg.p_jpeg == 1.0  # every image (augment_study.md)
    for name, style in PLATFORM_STYLES.items():
        assert cfg.rescale_factor[0] <= style.scale[0] and style.scale[1] <= cfg.rescale_factor[1], name
        assert cfg.jpeg_quality[0] <= style.quality[0] and style.quality[1] <= cfg.jpeg_quality[1], name
