"""verify_exports on ONNX files: parity numbers, tolerances, a report that fails when it should."""

import copy
import json

import torch

from ladeda_lib.export import Tolerances, export_onnx, verify_exports
from ladeda_lib.models import TinyLaDeDa


def test_verification_of_a_faithful_and_of_a_wrong_file(tmp_path):
    torch.manual_seed(0)
    model = TinyLaDeDa().eval()
    good = export_onnx(model, tmp_path / "good.onnx", with_patches=True)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc.bias += 1.0  # a different model: shifted logits
    wrong = export_onnx(other, tmp_path / "wrong.onnx")
    images = torch.randint(0, 256, (5, 3, 256, 256), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1, 1])
    report = verify_exports(model, {"onnx": good, "float32": wrong}, images, labels, latency_runs=2, progress=False)
    onnx_row, wrong_row = report.row("onnx"), report.row("float32")
    assert onnx_row.passed and onnx_row.max_abs < 1e-4 and onnx_row.agreement == 1.0
    assert onnx_row.patch_cosine > 0.9999 and onnx_row.accuracy == report.row("pytorch").accuracy
    assert onnx_row.io["inputs"][0]["shape"] == [1, 3, 256, 256]
    assert not wrong_row.passed and abs(wrong_row.max_abs - 1.0) < 1e-3 and wrong_row.patch_cosine is None
    assert not report.passed and len(report.failures) == 1
    assert report.failures[0].startswith("float32: max |Δlogit| 1.00e+00 is") and "limit 1e-04" in report.failures[0]
    md, js = report.write(tmp_path, "s")
    assert "| onnx |" in md.read_text() and "FAIL" in md.read_text()
    assert json.loads(js.read_text())["passed"] is False


def test_parity_is_relative_to_the_logit_magnitude(tmp_path):
    """A ForenSynth-like student (bn1 variance divided by 300: logits in the hundreds) passes its ONNX check,
    and so does a faithful file when its logits are scaled up further; a wrong file still fails."""
    torch.manual_seed(0)
    model = TinyLaDeDa(pool="all").eval()
    with torch.no_grad():
        model.bn1.running_var.div_(300)
        model.fc.weight.mul_(50)
    path = export_onnx(model, tmp_path / "big.onnx", with_patches=True)  # raised on an absolute 1e-4 before
    images = torch.randint(0, 256, (4, 3, 256, 256), dtype=torch.uint8)
    report = verify_exports(model, {"onnx": path}, images, latency_runs=0, progress=False)
    row = report.row("onnx")
    with torch.no_grad():
        scale = float(model.patch_logits(torch.randn(1, 3, 256, 256)).abs().max())
    assert scale > 100 and row.passed and row.max_rel < 1e-4 and row.patch_rel_error < 1e-5


def test_tolerances_dataclass():
    tol = Tolerances(threshold=0.8)
    assert tol.limits("float32") == (1e-4, None) and tol.limits("int8") == (None, 0.99)
    assert abs(tol.logit_threshold - 1.3862944) < 1e-6 and Tolerances().logit_threshold == 0


def test_latency_is_the_quietest_blocks_median():
    import time

    from ladeda_lib.timing import measure_latency_ms

    calls = {"n": 0}

    def burst_then_quiet():  # warm-up 3 calls, then 15 slow calls (a burst of load), then 15 quick ones
        calls["n"] += 1
        time.sleep(0.02 if 3 < calls["n"] <= 18 else 0.002)

    ms = measure_latency_ms(burst_then_quiet, runs=30, warmup=3, blocks=3)
    assert 2.0 <= ms < 10.0, ms  # the plain median of these 30 calls would be about 11 ms
    calls["n"] = 0
    assert measure_latency_ms(burst_then_quiet, runs=30, warmup=3, blocks=1) > 10.0
