"""Stand-ins for the published Tiny-LaDeDa checkpoints, whose files may not be committed (research-only licence).

Both published files are bare state_dicts of a published-layout Tiny-LaDeDa with mean pooling; what makes them
hard to deploy is the *range* of their logits, which these stand-ins reproduce:

* ``"wildrf_like"`` imitates ``WildRF_Tiny_LaDeDa.pth`` on the toy images: patch logits of hundreds (the file:
  about ±400, an int8 patch-logit step of 3.36), image logits a few units either side of 0 — ``fc`` is
  scaled so the patch logits have a standard deviation of 100 and its bias puts the median image logit at 0.
* ``"forensynth_like"`` imitates ``ForenSynth_Tiny_LaDeDa.pth``: ``bn1.running_var`` divided by 300 (the file's
  is about 0.02, the WildRF file's 2–9), image logits spread by hundreds and shifted so the smallest is 300 —
  every image "fake" at p = 0.5 until a decision calibration (``ladeda calibrate``) is fitted.

Both have BatchNorm statistics measured on the given images and a "trained" head: the least-squares direction in
mean-pooled feature space separating the two classes. Used by ``benchmarks/int8_study.py`` and the export tests
(``tests/conftest.py`` puts ``benchmarks/`` on the import path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ladeda_lib.data.images import normalised_images
from ladeda_lib.models import TinyLaDeDa

#: The stand-in kinds :func:`stand_in` builds.
STAND_IN_KINDS = ("wildrf_like", "forensynth_like")


def stand_in(kind: str, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> TinyLaDeDa:
    """A published-layout Tiny-LaDeDa (mean pooling) behaving like the published file ``kind``.

    Args:
        kind: one of :data:`STAND_IN_KINDS`.
        images: uint8 (N, 3, 256, 256) (or normalised float) images for the BatchNorm statistics and the head.
        labels: (N,) 0 = real, 1 = fake.
        seed: initial weights of ``conv1``, ``conv2`` and ``layer1``.
    Returns:
        the model in eval mode; ``model(x)`` (B, 3, 256, 256) normalised → (B, 1) large logits.
    """
    if kind not in STAND_IN_KINDS:
        raise ValueError(f"unknown stand-in {kind!r}; choose one of {', '.join(STAND_IN_KINDS)}")
    torch.manual_seed(seed)
    model = TinyLaDeDa(pool="all")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batches below
    x = torch.from_numpy(normalised_images(images))
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), 16):
            model(x[start : start + 16])
    model.eval()
    with torch.no_grad():
        if kind == "forensynth_like":
            model.bn1.running_var.div_(300)
        feats = torch.cat([model.features(x[i : i + 16]).mean(dim=(2, 3)) for i in range(0, len(x), 16)])
        target = labels.float() * 2 - 1
        w = torch.linalg.lstsq(feats - feats.mean(0), (target - target.mean())[:, None]).solution[:, 0]
        model.fc.weight.copy_(w[None] / w.abs().max())
        model.fc.bias.zero_()
        logits = lambda: torch.cat([model(x[i : i + 16]) for i in range(0, len(x), 16)])  # noqa: E731
        if kind == "wildrf_like":
            patch_std = float(torch.cat([model.patch_logits(x[i : i + 16]) for i in range(0, len(x), 16)]).std())
            model.fc.weight.mul_(100 / patch_std)
            model.fc.bias.fill_(-float(logits().median()))
        else:
            model.fc.weight.mul_(500 / float(logits().std()))
            model.fc.bias.fill_(300 - float(logits().min()))  # every image logit positive, in the hundreds+
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.001 if m is model.bn1 else 0.1
    return model


def forensynth_like_from(student: TinyLaDeDa, divisor: float = 300.0) -> TinyLaDeDa:
    """A ForenSynth-like copy of a *trained* student: its weights in the published layout with mean pooling and
    ``bn1.running_var`` divided by ``divisor`` — the recipe of issue 14, on a network that learned something.

    Unlike :func:`stand_in`'s ``"forensynth_like"`` (a least-squares head over untrained features, whose patch
    logits of ±600,000 cancel to image logits of a few hundred) its head was trained, so it shows how a
    ForenSynth-like checkpoint behaves when its large logits do not come from cancellation. Needs a decision
    calibration (``ladeda calibrate``) before its decisions mean anything.
    """
    model = TinyLaDeDa(preprocess=student.preprocess.name, pool="all")
    model.load_state_dict(student.state_dict())
    with torch.no_grad():
        model.bn1.running_var.div_(divisor)
    return model.eval()


def synthetic_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 3, size, size) smooth "real" images and 2× re-upsampled "fake" ones; labels (n,) alternate 0/1.

    Small labelled images for tests that need no dataset on disk."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear")
    img = (base + 0.03 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    labels = torch.arange(n) % 2
    fake = F.interpolate(F.interpolate(img, scale_factor=0.5, mode="bilinear", antialias=True), scale_factor=2.0)
    img = torch.where(labels.view(-1, 1, 1, 1).bool(), fake, img)
    return (img * 255).round().to(torch.uint8), labels
