"""The slow end-to-end path: a briefly trained student → ONNX → four TFLite files → verification.

One conversion is shared by the whole session (``exported_student`` in ``conftest.py``). It runs with every
socket connection refused, so the tests prove that conversion never touches the network, and it converts a
file whose hash is checked afterwards, so they prove the user's .onnx is never modified.
"""

import hashlib

import numpy as np
import pytest
import torch
from conftest import NetworkBlocked, normalise

from ladeda_lib.export import (
    ExportError,
    Tolerances,
    compare_with_pytorch_quantizer,
    convert_to_tflite,
    topk_k_as_constant_nodes,
    verify_exports,
)
from ladeda_lib.predictors import TFLitePredictor

pytestmark = pytest.mark.slow


def test_student_learned_the_synthetic_task(exported_student):
    assert exported_student["report"].row("pytorch").accuracy == 1.0


def test_conversion_is_offline_and_leaves_the_onnx_untouched(exported_student):
    assert exported_student["network"].attempts == []
    assert hashlib.sha256(exported_student["onnx"].read_bytes()).hexdigest() == exported_student["digest"]
    assert set(exported_student["files"]) == {"float32", "float16", "dynamic_range", "int8"}
    assert all(p.name == f"student_{q}.tflite" for q, p in exported_student["files"].items())


def test_input_output_shapes_and_int8_quantization_parameters(exported_student):
    for fmt, path in exported_student["files"].items():
        runner = TFLitePredictor(path)
        assert runner.input.shape == (1, 3, 256, 256) and runner.layout == "NCHW"
        assert runner.has_patches and len(runner.output_names) == 2
        assert runner.input.dtype == ("int8" if fmt == "int8" else "float32")
        if fmt == "int8":
            assert runner.input.scale > 0 and all(o.dtype == "int8" and o.scale > 0 for o in runner.outputs)
        logit, patches = runner(normalise(exported_student["test"][0][:3]))  # batch 3 on a batch-1 file
        assert logit.shape == (3, 1) and patches.shape == (3, 1, 126, 126)


def test_parity_per_format_meets_the_tolerances(exported_student):
    report = exported_student["report"]
    assert report.passed, report.to_markdown()
    # relative to the logit scale: the trained student's logits reach tens to hundreds
    assert report.row("onnx").max_rel < 1e-5
    assert report.row("float32").max_rel < 1e-5
    assert report.row("float16").max_rel < 1e-2
    # train_student seeds 0-4, both kernel paths: int8 agreement 1.00, cosine >= 0.99969, accuracy and AP 1.0; float16 max_rel <= 2.4e-5
    assert report.row("int8").agreement >= 0.99
    assert report.row("int8").patch_cosine > 0.99
    assert report.row("int8").accuracy == 1.0 and report.row("int8").ap > 0.999
    assert all(r.size_bytes > 0 and r.latency_ms > 0 for r in report.rows[1:])


def test_report_is_written_and_a_failed_check_is_reported(exported_student):
    md, js = exported_student["report"].write(exported_student["folder"], "student")
    text = md.read_text()
    assert "| int8 | int8 1×3×256×256 q(" in text and "FAIL" not in text
    assert '"passed": true' in js.read_text()
    strict = Tolerances(float16_max_rel=1e-9)
    failing = verify_exports(
        exported_student["model"],
        {"float16": exported_student["files"]["float16"]},
        exported_student["test"][0][:4],
        tolerances=strict,
        latency_runs=0,
        progress=False,
    )
    assert not failing.passed and failing.failures[0].startswith("float16: max |Δlogit|")


def test_pytorch_quantizer_compared_with_tflite_dynamic_range(exported_student):
    x = exported_student["test"][0][:6]
    # TFLite keeps tensors < 1024 weights in float; with the same rule both sides equal the float model
    same_rule = compare_with_pytorch_quantizer(
        exported_student["model"], exported_student["files"]["dynamic_range"], x, min_elements=1024
    )
    with torch.no_grad():  # differences relative to the logit scale (this student's logits reach tens)
        scale = max(1.0, exported_student["model"](normalise(x)).abs().max().item())
    assert same_rule["pytorch_quantized_vs_float"] == 0
    assert same_rule["pytorch_quantized_vs_tflite_dynamic_range"] < 1e-5 * scale
    every_weight = compare_with_pytorch_quantizer(
        exported_student["model"], exported_student["files"]["dynamic_range"], x
    )
    # seeds 0-4 of train_student, both kernel paths: 0.002 to 0.017 of the scale (same rule: <= 2.5e-7)
    assert 0 < every_weight["pytorch_quantized_vs_float"] < 0.05 * scale


def test_nhwc_from_a_simplified_graph_converts_offline(exported_student, tmp_path, monkeypatch):
    import onnx

    # a graph as onnx-simplifier leaves it (TopK's K an initializer): onnx2tf 1.28 + NumPy >= 2.4 crash on it
    model = onnx.load(str(exported_student["onnx"]))
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    const = next(n for n in model.graph.node if n.output[0] == topk.input[1])
    model.graph.node.remove(const)
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(const.attribute[0].t), topk.input[1])
    )
    simplified = tmp_path / "simplified.onnx"
    onnx.save(model, str(simplified))
    before = simplified.read_bytes()
    network = NetworkBlocked(monkeypatch)  # NHWC inputs are what makes onnx2tf reach for its sample download
    files = convert_to_tflite(simplified, tmp_path, ["float32"], nhwc=True)
    assert network.attempts == [] and simplified.read_bytes() == before
    runner = TFLitePredictor(files["float32"])
    assert runner.input.shape == (1, 256, 256, 3) and runner.layout == "NHWC"
    x = normalise(exported_student["test"][0][:2])
    logit, patches = runner(x)
    with torch.no_grad():
        ref_logit, ref_patches = exported_student["model"].forward_with_patches(x)
    # float32 both sides, other kernels: relative to the largest value (patch logits reach a few hundred here)
    assert np.abs(logit - ref_logit.numpy()).max() < 1e-5 * max(1.0, ref_logit.abs().max().item())
    assert np.abs(patches - ref_patches.numpy()).max() < 1e-5 * max(1.0, ref_patches.abs().max().item())
    assert topk_k_as_constant_nodes(onnx.load(str(simplified))) == 1  # the user's copy still has it


def test_int8_without_representative_images_and_bad_ones_are_clear_errors(exported_student, tmp_path):
    with pytest.raises(ExportError, match="needs representative images"):
        convert_to_tflite(exported_student["onnx"], tmp_path, ["int8"])
    with pytest.raises(ExportError, match=r"expects \(3, 256, 256\)"):
        convert_to_tflite(
            exported_student["onnx"], tmp_path, ["int8"], representative=torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
        )
    with pytest.raises(ExportError, match="unknown quantization"):
        convert_to_tflite(exported_student["onnx"], tmp_path, ["int4"])
