"""Training-time augmentation: blur, rescale and JPEG drawn at random, reproducibly, from a ``torch.Generator``.

The degradations are those of :mod:`ladeda_lib.data.degrade` (what platforms do to uploads); here each
image of a batch gets each one with a probability and a strength drawn from a range. Order per image:
blur (the optics) → rescale (the platform's resize) → JPEG (its recompression) → back to the batch's size
through the shared input geometry.

* :class:`AugmentConfig` — probabilities and ranges; **off by default** (every probability 0), which keeps
  the seed's "no augmentation" training bit for bit. :meth:`AugmentConfig.platform` is the setting
  ``--augment`` switches on; :meth:`AugmentConfig.parse` reads ``--augment`` values.
* :func:`augment_batch` — uint8 (B, 3, H, W) → uint8 (B, 3, H, W), deterministic given the generator.
* :class:`AugmentedTask` — wraps a training task (``plan``/``fetch``, see :mod:`ladeda_lib.distill.loop`):
  ``plan`` draws one seed per batch from the loop's generator (in the main process), ``fetch`` augments the
  batch's ``"images"`` with a generator seeded by it — so runs stay deterministic even when DataLoader
  workers fetch. Every other key of the batch (labels, the teacher's patch targets) is left as it was:
  a student is taught to give on the *degraded* image the patch map the teacher gives on the *clean* one.

Introduced in notebook 09.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from ladeda_lib.data.degrade import gaussian_blur, jpeg, rescale, to_input_size

#: What an augmented run validates on (:class:`AugmentedTask`): the val split as it is, or the mean AP of the
#: split and of one fixed copy degraded by the run's augmentation.
VAL_VIEWS = ("clean", "clean+degraded")
#: Seed of the generator that degrades that copy: the same copy in every run, whatever the training seed.
VAL_VIEW_SEED = 20221


@dataclass(frozen=True)
class AugmentConfig:
    """Per-image probabilities and (inclusive) ranges of the three degradations; all off by default.

    ``p_blur`` with ``blur_sigma`` (pixels), ``p_rescale`` with ``rescale_factor`` (downscale factor, then back
    to the batch's size), ``p_jpeg`` with ``jpeg_quality``. Strengths are drawn uniformly (quality: an integer).
    """

    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_rescale: float = 0.0
    rescale_factor: tuple[float, float] = (0.4, 1.0)
    p_jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (50, 95)

    def __post_init__(self) -> None:
        for name in ("p_blur", "p_rescale", "p_jpeg"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"augment {name} is a probability and must lie in [0, 1], got {p}")
        checks = (
            ("blur_sigma", 0.0, 20.0),
            ("rescale_factor", 0.05, 1.0),
            ("jpeg_quality", 1, 100),
        )
        for name, lo, hi in checks:
            a, b = getattr(self, name)
            if not lo <= a <= b <= hi:
                raise ValueError(
                    f"augment {name} must be a range (low, high) with {lo} <= low <= high <= {hi}, got {(a, b)}"
                )
        object.__setattr__(self, "blur_sigma", (float(self.blur_sigma[0]), float(self.blur_sigma[1])))
        object.__setattr__(self, "rescale_factor", (float(self.rescale_factor[0]), float(self.rescale_factor[1])))
        object.__setattr__(self, "jpeg_quality", (int(self.jpeg_quality[0]), int(self.jpeg_quality[1])))

    @property
    def enabled(self) -> bool:
        """True when any degradation has a non-zero probability."""
        return self.p_blur > 0 or self.p_rescale > 0 or self.p_jpeg > 0

    @classmethod
    def platform(cls) -> AugmentConfig:
        """The setting ``--augment`` turns on: **every** training image rescaled ×0.45-1 and then recompressed at
        JPEG quality 60-95 — a range that spans all three toy platforms with a small margin (reddit ×1 and
        90-95, twitter ×0.7-0.85 and 75-85, facebook ×0.5-0.65 and 65-75); no blur (no platform blurs).

        Measured on the toy data (``benchmarks/augment_study.md``, students trained on the labels for 80 epochs):
        AP 0.981 / 0.987 / 0.932 on reddit / twitter / facebook (seed 0; reddit-facebook gap 0.049) against
        0.954 / 0.824 / 0.695 for the same run without augmentation (gap 0.258). Three things mattered: degrading
        every image (the earlier half-and-half setting left the gap near 0.18), a long run (after 8 epochs the
        same run stood at reddit 0.846, facebook 0.767), and labels rather than the clean image's teacher
        map as the target (with α_d = 0.5 the ×0.5-1 / 65-95 chain gave facebook 0.833 against 0.929).
        """
        return cls(p_rescale=1.0, rescale_factor=(0.45, 1.0), p_jpeg=1.0, jpeg_quality=(60, 95))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (ranges as lists), as stored in checkpoint metadata."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AugmentConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``); None gives the default (off)."""
        if not values:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augment settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})

    @classmethod
    def parse(cls, text: str | None) -> AugmentConfig:
        """Read a ``--augment`` value.

        ``"off"``/``"none"``/empty → off; ``"on"``/``"platform"`` → :meth:`platform`; otherwise comma-separated
        ``key=value`` overrides of :meth:`platform`, ranges as ``low:high``, e.g.
        ``"p_jpeg=0.8,jpeg_quality=30:90,p_blur=0"``.
        """
        if text is None or str(text).strip().lower() in ("", "off", "none", "false", "0"):
            return cls()
        text = str(text).strip()
        if text.lower() in ("on", "platform", "true", "1"):
            return cls.platform()
        values = cls.platform().to_dict()
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in values:
                raise ValueError(
                    f"--augment: cannot read {item!r}; expected 'on', 'off' or key=value pairs with keys {sorted(values)}"
                )
            try:
                if isinstance(values[key], list):
                    lo, _, hi = value.partition(":")
                    values[key] = [float(lo), float(hi or lo)]
                else:
                    values[key] = float(value)
            except ValueError as err:
                raise ValueError(f"--augment: {key} needs a number (ranges as low:high), got {value!r}") from err
        return cls.from_dict(values)


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64))


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Degrade each image of a batch at random: uint8 (B, 3, H, W) → uint8 (B, 3, H, W).

    For each image, in order: blur with probability ``p_blur`` (sigma uniform in ``blur_sigma``), rescale with
    probability ``p_rescale`` (factor uniform in ``rescale_factor``; back to H×W through the shared input
    geometry), JPEG with probability ``p_jpeg`` (integer quality uniform in ``jpeg_quality``). The same
    number of values is drawn from ``generator`` for every image whatever the coin flips give, so the same
    generator state always gives the same batch. A disabled config returns ``images`` itself.
    Introduced in notebook 09.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"augment_batch expects uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if not config.enabled:
        return images
    h, w = images.shape[-2:]
    out = []
    for image in images:
        coins = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        sigma = _uniform(generator, *config.blur_sigma)
        factor = _uniform(generator, *config.rescale_factor)
        lo, hi = config.jpeg_quality
        quality = int(torch.randint(lo, hi + 1, (), generator=generator))
        x = image
        if coins[0] < config.p_blur:
            x = gaussian_blur(x, sigma)
        if coins[1] < config.p_rescale and factor < 1.0:
            x = rescale(x, factor)
        if coins[2] < config.p_jpeg:
            x = jpeg(x, quality)
        if tuple(x.shape[-2:]) != (h, w):
            x = to_input_size(x, h) if h == w else _resize_rect(x, h, w)
        out.append(x)
    return torch.stack(out)


def _resize_rect(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    y = TF.resize(image[None].float(), [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return y[0].round_().clamp_(0, 255).to(torch.uint8)


class AugmentedTask:
    """A training task whose batches are augmented: wraps any object with ``plan``/``fetch`` (see
    :class:`ladeda_lib.distill.loop.TrainTask`); every other attribute is the wrapped task's.

    ``plan`` returns ``(spec, seed)`` pairs, the seeds drawn from the loop's generator after the wrapped
    plan; ``fetch`` calls the wrapped ``fetch(spec)`` and replaces ``batch["images"]`` by
    :func:`augment_batch` with ``torch.Generator().manual_seed(seed)``. All other batch entries are untouched:
    for distillation the teacher's patch targets stay those of the clean image. Use :func:`with_augmentation`
    to wrap only when the config is enabled. Works behind notebook 09.
    """

    def __init__(self, task: Any, config: AugmentConfig, warmup_epochs: int = 0, val_views: str = "clean") -> None:
        if val_views not in VAL_VIEWS:
            raise ValueError(f"val_views {val_views!r}: expected one of {', '.join(VAL_VIEWS)}")
        self.task, self.augment = task, config
        self.warmup_epochs, self.epoch = int(warmup_epochs), 0
        self.val_views, self._val_degraded = val_views, None

    def begin_epoch(self, epoch: int) -> None:
        """Record the epoch (for the warm-up) and pass it on to the wrapped task if it wants it."""
        self.epoch = epoch
        if hasattr(self.task, "begin_epoch"):
            self.task.begin_epoch(epoch)

    def current(self) -> AugmentConfig:
        """The config of this epoch: during a warm-up of W epochs, epoch e uses every probability × e / W
        (the first epoch is clean), then the config itself."""
        if self.epoch >= self.warmup_epochs:
            return self.augment
        share = self.epoch / self.warmup_epochs
        a = self.augment
        return replace(a, p_blur=a.p_blur * share, p_rescale=a.p_rescale * share, p_jpeg=a.p_jpeg * share)

    def degraded_val(self) -> torch.Tensor:
        """The val images degraded once by the full config (not the warm-up's), with a fixed seed; kept."""
        if self._val_degraded is None:
            generator = torch.Generator().manual_seed(VAL_VIEW_SEED)
            self._val_degraded = augment_batch(self.task.val_images, self.augment, generator)
        return self._val_degraded

    def validate(self, model: Any) -> dict[str, float]:
        """The wrapped task's metrics on val; with ``val_views="clean+degraded"`` its ``ap`` (the value that picks
        the best checkpoint) is the mean of the clean AP and the AP on :meth:`degraded_val`, both also returned
        (``ap_clean``, ``ap_degraded``). A run that trains on degraded images is then not judged on clean ones
        only, where the lightly augmented first epochs of a warm-up look best."""
        clean = self.task.validate(model)
        if self.val_views == "clean":
            return clean
        degraded = self.task.validate(model, images=self.degraded_val())
        return {
            **clean,
            "ap": (clean["ap"] + degraded["ap"]) / 2,
            "ap_clean": clean["ap"],
            "ap_degraded": degraded["ap"],
        }

    def __getattr__(self, name: str) -> Any:
        if name in (
            "task",
            "augment",
            "val_views",
            "_val_degraded",
        ):  # not set yet (e.g. while unpickling in a DataLoader worker)
            raise AttributeError(name)
        return getattr(self.task, name)

    def plan(self, generator: torch.Generator, batch_size: int) -> list[tuple[Any, int]]:
        specs = self.task.plan(generator, batch_size)
        seeds = torch.randint(0, 2**62, (len(specs),), generator=generator).tolist()
        config = self.current()  # in the plan, so DataLoader workers degrade with this epoch's config
        return [(spec, seed, config) for spec, seed in zip(specs, seeds, strict=True)]

    def fetch(self, spec: tuple[Any, int, AugmentConfig]) -> dict[str, torch.Tensor]:
        inner, seed, config = spec
        batch = self.task.fetch(inner)
        generator = torch.Generator().manual_seed(int(seed))
        return {**batch, "images": augment_batch(batch["images"], config, generator)}


def with_augmentation(task: Any, config: AugmentConfig | None, warmup_epochs: int = 0, val_views: str = "clean") -> Any:
    """``task`` itself when ``config`` is None or off (the batch stream is bit-identical), else an
    :class:`AugmentedTask` (with ``warmup_epochs``, see :meth:`AugmentedTask.current`, and ``val_views``, see
    :meth:`AugmentedTask.validate`). Works behind notebook 09."""
    if config is None or not config.enabled:
        return task
    return AugmentedTask(task, config, warmup_epochs, val_views)
