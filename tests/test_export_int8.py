"""Full int8 for any student: the pixel-input graph's pieces (zero-sum rounding, folded normalisation, border
padding, whole-grid pooled head) and the stand-ins for the published checkpoints
(``benchmarks/standins.py``) exporting to every format with every check passing, int8 included.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from int8_study import choose_clamp
from standins import stand_in, synthetic_images

from ladeda_lib.calibration import fit_calibration
from ladeda_lib.data.images import normalised_images
from ladeda_lib.export import export_model
from ladeda_lib.export.int8 import export_pixel_onnx
from ladeda_lib.graphs.pixel_input import (
    PixelInputStudent,
    border_pixels,
    int8_round,
    normalised_to_pixels,
    pixel_images,
    representative_pixels,
    snap_to_grid,
    zero_sum_round,
)
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.predictors import load_predictor


@pytest.fixture(scope="module")
def data():
    calibration, calibration_labels = synthetic_images(48, 256, seed=2)
    test_images, test_labels = synthetic_images(60, 256, seed=3)
    return calibration, calibration_labels, test_images, test_labels


@pytest.fixture(scope="module")
def wildrf_like(data):
    """The WildRF-like stand-in, built once (about 3 s idle, 13 s on a busy 2-core machine)."""
    return stand_in("wildrf_like", data[0], data[1])


@pytest.fixture(scope="module")
def forensynth_like(data):
    return stand_in("forensynth_like", data[0], data[1])


def test_choose_clamp_keeps_every_decision(data, wildrf_like):
    calibration = data[0]
    model = wildrf_like
    x = torch.from_numpy(normalised_images(calibration))
    with torch.no_grad():
        patches = model.patch_logits(x)
        before = model.pool(patches).reshape(-1)
    # the threshold in the middle of the widest gap between the image logits: a decision then cannot hinge on the
    # last digits of a float sum (at 0, one of these 48 images sat within 0.4 of the threshold on some machines)
    values = sorted(before.tolist())
    width, threshold = max((b - a, (a + b) / 2) for a, b in zip(values, values[1:], strict=False))
    assert width > 1.0
    bound = choose_clamp(model, calibration, threshold_logit=threshold, max_shift=1.0)
    assert bound is not None  # a bound exists that keeps every decision and moves no logit by a whole std
    with torch.no_grad():
        after = model.pool(patches.clamp(-bound, bound)).reshape(-1)
    assert bool(((after >= threshold) == (before >= threshold)).all()) and bound < float(patches.abs().max())
    # no bound that clips anything moves no image logit at all
    assert choose_clamp(model, calibration, threshold_logit=threshold, max_shift=0.0) is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wildrf_like", "forensynth_like"])
def test_large_logit_students_export_to_every_format_with_all_checks(kind, data, tmp_path, request):
    calibration, calibration_labels, test_images, test_labels = data
    model = request.getfixturevalue(kind)
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
        representative_images=calibration,
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
    # int8 included: >= 99 % of decisions kept on held-out images, patch-map fidelity reported
    int8 = report.row("int8")
    assert int8.patch_rel_error is not None and int8.patch_cosine is not None
    # stand_in seeds 0-4, native and default kernels: agreement 1.00 every time (60 images: one flip is 0.983)
    assert int8.passed and int8.agreement >= 0.99, report.to_markdown()
    assert report.passed, report.to_markdown()
    # calibrated: the files' decisions are no longer "everything is fake"
    pytorch_accuracy = report.row("pytorch").accuracy
    if kind == "forensynth_like":
        assert pytorch_accuracy > 0.6
    else:  # uncalibrated, image logits around 0: the file decides as the model does
        assert report.row("int8").agreement >= 0.99


def test_equalize_channels_keeps_outputs_and_evens_out_ranges(data, forensynth_like):
    from ladeda_lib.graphs.equalize import equalize_channels

    calibration = data[0]
    model = forensynth_like
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


def test_zero_sum_round_keeps_each_kernel_sum_and_the_grid():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 3, 5, 5, generator=g, dtype=torch.float64)
    weight -= weight.mean(dim=(2, 3), keepdim=True)  # every (out, in) kernel sums to zero, like the fused stem
    taps, scale = zero_sum_round(weight)
    assert torch.equal(taps, taps.round()) and float(taps.abs().max()) <= 127
    assert torch.equal(taps.sum(dim=(2, 3)), torch.zeros(8, 3, dtype=taps.dtype))  # exactly 0
    assert torch.equal(taps.abs().flatten(1).amax(dim=1), torch.full((8,), 127.0, dtype=taps.dtype))
    exact = weight / scale.view(-1, 1, 1, 1)
    error = (taps - exact).abs()
    naive_missing = torch.round(exact).sum(dim=(2, 3)).abs()  # steps that had to be moved per kernel
    assert float(error.max()) < 1.5
    assert bool(((error > 0.5 + 1e-9).sum(dim=(2, 3)) <= naive_missing).all())  # only nudged taps exceed ½ step
    plain, _ = zero_sum_round(weight, zero_sum=False)
    assert torch.equal(plain, torch.round(exact)) and bool((plain.sum(dim=(2, 3)) != 0).any())


@pytest.mark.parametrize(("preprocess", "pool"), [("right_diag", "all"), ("right_diag", 0.1), ("raw", "all")])
def test_pixel_graph_equals_the_float_model(preprocess, pool, data):
    # Both are compared with a float64 run of the same model. In float64 the only difference left is the graph's
    # float32 constants (folded normalisation): 1.7e-8 of a 0.22 logit here, bound 1e-6 relative. In float32 the
    # image logit is a mean over 15,876 patch logits whose summation order depends on the CPU's kernels: a sum of
    # N terms can be off by N * eps32 * mean|term| (seen: 1e-8 here, 2.9e-6 on an AMD EPYC; bound 3e-4).
    calibration, labels, test_images, _ = data
    model = TinyLaDeDa(preprocess, pool=pool).eval()
    with torch.no_grad():
        for bn in (model.bn1, model.layer1[0].bn1, model.layer1[0].bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    graph = PixelInputStudent(model, with_patches=True, round_stem=False)
    x = torch.from_numpy(normalised_images(test_images[:4]))
    pixels = torch.from_numpy(pixel_images(test_images[:4]))
    with torch.no_grad():
        ref_logit, ref_patches = copy.deepcopy(model).double().forward_with_patches(x.double())
        logit64, patches64 = copy.deepcopy(graph).double()(pixels.double())
        logit, patches = graph(pixels)
    scale = float(ref_patches.abs().max())
    assert patches.shape == ref_patches.shape == (4, 1, 126, 126)
    assert float((patches64 - ref_patches).abs().max()) <= 1e-6 * scale
    assert float((logit64 - ref_logit).abs().max()) <= 1e-6 * scale
    patch_bound = 1e-5 * scale  # a patch logit is a short sum (a few hundred terms)
    assert float((patches.double() - ref_patches).abs().max()) <= patch_bound
    n = ref_patches[0].numel()
    sum_bound = n * torch.finfo(torch.float32).eps * float(ref_patches.abs().mean())
    assert float((logit.double() - ref_logit).abs().max()) <= patch_bound + sum_bound


def test_border_padding_is_the_normalised_zero():
    # the float model pads normalised zeros, i.e. pixel 255·mean; the first patch row and column see that border
    model = TinyLaDeDa(pool="all").eval()
    graph = PixelInputStudent(model, with_patches=True, round_stem=False)
    border = border_pixels(rounded=False).float().view(1, 3, 1, 1) + 128  # pixel values 0..255
    flat = border.expand(1, 3, 256, 256) / 255.0
    x = (flat - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    assert float(x.abs().max()) < 1e-6  # an image of border pixels is normalised zero everywhere
    with torch.no_grad():
        want = model.patch_logits(x)
        _, got = graph(border.expand(1, 3, 256, 256) - 128)
    assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    assert torch.equal(border_pixels(), torch.tensor([-4.0, -12.0, -24.0], dtype=torch.float64))


def test_pixel_graph_refuses_npr_and_the_calibration_range_is_exact(data):
    with pytest.raises(ValueError, match="normalised-input graph"):
        PixelInputStudent(TinyLaDeDa("NPR"))
    calibration = data[0]
    pixels = representative_pixels(calibration[:2] // 2 + 40)  # never reaches 0 or 255
    assert float(pixels.min()) == -128 and float(pixels.max()) == 127


def test_onnx_pixel_file_is_fed_pixels_by_the_predictor(data, wildrf_like, tmp_path):
    test_images = data[2]
    model = wildrf_like
    graph = PixelInputStudent(model, with_patches=True)
    path = export_pixel_onnx(graph, tmp_path / "pixels.onnx")
    predictor = load_predictor(path, threads=1)
    assert predictor.pixel_input
    x = normalised_images(test_images[:3])
    assert np.array_equal(normalised_to_pixels(x), pixel_images(test_images[:3]))  # exact for uint8 images
    logit, patches = predictor(x)
    with torch.no_grad():
        want_logit, want_patches = graph(torch.from_numpy(pixel_images(test_images[:3])))
    assert np.allclose(logit, want_logit.numpy(), rtol=1e-4, atol=1e-4 * float(want_patches.abs().max()))
    # uint8 images go in as pixels, with no normalised image in between: the same numbers exactly
    from_pixels, _ = predictor(test_images[:3])
    np.testing.assert_array_equal(from_pixels, logit)


def test_snap_to_grid_puts_the_head_on_its_int8_grid_and_keeps_the_outputs():
    torch.manual_seed(4)
    before, head = torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(8, 1, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([1.0, -0.5037, 0.0, 0.013, -0.998, 0.25, 1e-5, -0.7]).view(1, 8, 1, 1) * 900)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        want = head(torch.relu(before(x)))
        factors = snap_to_grid(before, head)
        got = head(torch.relu(before(x)))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    w = head.weight.flatten().double()
    step = w.abs().max() / 127
    codes = w / step
    assert torch.allclose(codes, torch.round(codes), atol=1e-4)  # every weight is a whole number of steps
    assert float(codes.abs().max()) == pytest.approx(127)
    assert bool((factors > 0).all()) and float(factors[2]) == 1.0  # a zero weight leaves its channel alone
    k = torch.round(codes.abs()).clamp_min(1)
    big = k >= 10
    assert bool(((factors[big] - 1).abs() <= 0.5 / k[big] + 1e-9).all())  # near 1 wherever the weight matters


def test_forensynth_like_copy_of_a_trained_student_has_mean_pooling_and_large_logits():
    from standins import forensynth_like_from

    torch.manual_seed(1)
    student = TinyLaDeDa(pool=0.1).eval()
    with torch.no_grad():
        student.bn1.running_var.uniform_(2.0, 9.0)  # like the WildRF file
    copy = forensynth_like_from(student)
    assert copy.pool.k is None and copy.preprocess.name == student.preprocess.name
    assert torch.allclose(copy.bn1.running_var * 300, student.bn1.running_var)
    assert torch.equal(copy.conv2.weight, student.conv2.weight) and student.bn1.running_var.min() >= 2.0  # a copy
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert float(copy.patch_logits(x).abs().max()) > 2 * float(student.patch_logits(x).abs().max())


def test_int8_round_has_256_levels_with_zero_among_them_and_clips():
    t = torch.linspace(-3.0, 9.0, 10_001)
    got = int8_round(t, -2.0, 8.0)
    step = 10.0 / 255
    levels = torch.unique(got)
    assert len(levels) == 256 and bool((levels == 0).any())
    assert torch.allclose(torch.diff(levels), torch.full((255,), step), rtol=1e-4)
    inside = (t >= -2.0) & (t <= 8.0)
    assert float((got - t)[inside].abs().max()) <= step / 2 + 1e-6
    assert float(got.min()) >= -2.0 - step and float(got.max()) <= 8.0 + step  # clipped beyond the range
    # a logit shifted down by half a step keeps its decision through the rounding: the threshold lies between levels
    shifted = int8_round(t - step / 2, -2.0 - step / 2, 8.0 - step / 2)
    assert torch.equal(shifted >= 0, t >= 0)


@pytest.mark.slow  # simulates int8 rounding layer by layer over 48 images, twice: about 30 s on 2 busy cores
def test_bias_correction_brings_the_simulated_int8_file_closer_to_float(data, wildrf_like):
    calibration, labels, test_images, _ = data
    model = wildrf_like
    fitted = fit_calibration(
        model(torch.from_numpy(normalised_images(calibration))).detach().numpy().reshape(-1), labels.numpy()
    )
    with torch.no_grad():
        want = torch.from_numpy(fitted.apply(model(torch.from_numpy(normalised_images(test_images))).numpy()))
    cal_pixels, pixels = (
        torch.from_numpy(representative_pixels(calibration)),
        torch.from_numpy(pixel_images(test_images)),
    )
    errors = {}
    for corrected in (False, True):
        graph = PixelInputStudent(model, decision_calibration=fitted, correct_images=calibration if corrected else None)
        with torch.no_grad():
            ranges = graph._ranges(cal_pixels)
            int8 = int8_round(graph._stages(pixels, ranges)[3], *ranges[3]).reshape(want.shape)
        errors[corrected] = float((int8 - want).abs().mean())
        if corrected:  # layer1's weights are already on their int8 grid: the converter's rounding changes nothing
            for conv in (graph.layer1[0].conv1, graph.layer1[0].conv2):
                taps, scale = zero_sum_round(conv.weight, zero_sum=False)
                assert torch.allclose(conv.weight.double(), taps * scale.view(-1, 1, 1, 1), rtol=1e-6)
    assert errors[True] < 0.8 * errors[False], errors  # measured here: 0.087 vs 0.129
