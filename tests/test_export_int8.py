"""Students with large logits: stand-ins for the published checkpoints export to every format; the checks are
relative to the logit magnitude; int8's decision agreement and patch-map fidelity are measured and enforced.

Stand-ins (the published files may not be committed): a published-layout Tiny-LaDeDa with mean pooling and
measured BatchNorm statistics, whose head is the least-squares direction separating the classes, made
WildRF-like (``fc`` scaled: patch logits of hundreds, image logits a few units either side of 0) or
ForenSynth-like (``bn1.running_var`` / 300 and a large bias: every image logit in the hundreds).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ladeda_lib.calibration import fit_calibration
from ladeda_lib.export import export_model
from ladeda_lib.export.int8 import choose_clamp
from ladeda_lib.export.tflite import normalised_images
from ladeda_lib.models import TinyLaDeDa


def synthetic_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 3, size, size) smooth 'real' images and 2× upsampled 'fake' ones; labels (n,) alternate."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear")
    img = (base + 0.03 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    labels = torch.arange(n) % 2
    fake = F.interpolate(F.interpolate(img, scale_factor=0.5, mode="bilinear", antialias=True), scale_factor=2.0)
    img = torch.where(labels.view(-1, 1, 1, 1).bool(), fake, img)
    return (img * 255).round().to(torch.uint8), labels


def stand_in(kind: str, images: torch.Tensor, labels: torch.Tensor) -> TinyLaDeDa:
    torch.manual_seed(0)
    model = TinyLaDeDa(pool="all")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    x = torch.from_numpy(normalised_images(images))
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        if kind == "forensynth_like":
            model.bn1.running_var.div_(300)
        feats = model.features(x).mean(dim=(2, 3))
        target = labels.float() * 2 - 1
        w = torch.linalg.lstsq(feats - feats.mean(0), (target - target.mean())[:, None]).solution[:, 0]
        model.fc.weight.copy_(w[None] / w.abs().max())
        model.fc.bias.zero_()
        if kind == "wildrf_like":
            model.fc.weight.mul_(100 / float(model.patch_logits(x).std()))
            model.fc.bias.fill_(-float(model(x).median()))
        else:
            model.fc.weight.mul_(500 / float(model(x).std()))
            model.fc.bias.fill_(300 - float(model(x).min()))
    return model


@pytest.fixture(scope="module")
def data():
    calibration, calibration_labels = synthetic_images(48, 256, seed=2)
    test_images, test_labels = synthetic_images(60, 256, seed=3)
    return calibration, calibration_labels, test_images, test_labels


def test_choose_clamp_keeps_every_decision(data):
    calibration, labels, _, _ = data
    model = stand_in("wildrf_like", calibration, labels)
    bound = choose_clamp(model, calibration, max_shift=1.0)
    x = torch.from_numpy(normalised_images(calibration))
    with torch.no_grad():
        patches = model.patch_logits(x)
        before = model.pool(patches).reshape(-1)
        if bound is not None:
            after = model.pool(patches.clamp(-bound, bound)).reshape(-1)
            assert bool(((after >= 0) == (before >= 0)).all()) and bound < float(patches.abs().max())
    assert choose_clamp(model, calibration, max_shift=0.0) is None or bound is not None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wildrf_like", "forensynth_like"])
def test_large_logit_students_export_to_every_format_with_all_checks(kind, data, tmp_path):
    calibration, calibration_labels, test_images, test_labels = data
    model = stand_in(kind, calibration, calibration_labels)
    with torch.no_grad():
        patches = model.patch_logits(torch.from_numpy(normalised_images(test_images)))
        logits = model.pool(patches).reshape(-1).numpy()
    if kind == "wildrf_like":
        assert float(patches.abs().max()) > 100 and np.median(np.abs(logits)) < 30
        decision = None
    else:
        assert logits.min() > 100  # every image "fake" until calibrated
        with torch.no_grad():
            raw = model(torch.from_numpy(normalised_images(calibration))).numpy().reshape(-1)
        decision = fit_calibration(raw, calibration_labels.numpy(), {"split": "calibration images"})
    result = export_model(
        model,
        tmp_path / "student.tflite",
        "all",
        calibration=calibration,
        eval_images=test_images,
        eval_labels=test_labels,
        with_patches=True,
        latency_runs=2,
        progress=False,
        decision_calibration=decision,
    )
    report = result.report
    # every float format passes its relative parity check (the ForenSynth-like file failed ONNX's absolute one)
    for fmt in ("onnx", "float32", "float16", "dynamic_range"):
        assert report.row(fmt).passed, report.to_markdown()
    assert report.row("onnx").max_rel < 1e-4 and report.row("float32").max_rel < 1e-4
    # int8 is converted and scored, patch-map fidelity reported; when it falls short of 99 % agreement the
    # report fails on exactly that check (benchmarks/int8_study.md: large-logit students lose decisions in int8)
    int8 = report.row("int8")
    assert int8.patch_rel_error is not None and int8.patch_cosine is not None
    assert all("decision agreement" in f for f in int8.failures)
    assert report.passed == (int8.agreement >= 0.99)
    # calibrated: the files' decisions are no longer "everything is fake"
    pytorch_decisions = report.row("pytorch").accuracy
    assert pytorch_decisions is not None and (decision is None or pytorch_decisions > 0.6)


def test_equalize_channels_keeps_outputs_and_evens_out_ranges(data):
    from ladeda_lib.export.int8 import equalize_channels

    calibration, labels, _, _ = data
    model = stand_in("forensynth_like", calibration, labels)
    equalized = equalize_channels(model, calibration)
    x = torch.from_numpy(normalised_images(calibration[:8]))
    with torch.no_grad():
        want, got = model.patch_logits(x), equalized.patch_logits(x)
        stem = equalized.relu(equalized.conv2(equalized.conv1(equalized.preprocess(x)))).amax(dim=(0, 2, 3))
        before = model.relu(model.bn1(model.conv2(model.conv1(model.preprocess(x))))).amax(dim=(0, 2, 3))
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    live = before > 0
    spread = lambda v: float(v[live].max() / v[live].min())  # noqa: E731
    assert spread(stem) < spread(before) and spread(stem) < 3.0
