"""ONNX export: names, shapes, checker, onnxruntime parity, the TopK rewrite for onnx2tf."""

import os

import numpy as np
import onnx
import pytest
import torch

from ladeda_lib.export import ExportError, export_onnx, topk_k_as_constant_nodes
from ladeda_lib.export.onnx_export import run_onnxruntime
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def _dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_student_export_names_shapes_and_parity(tmp_path):
    torch.manual_seed(0)
    model = TinyLaDeDa().eval()
    path = export_onnx(model, tmp_path / "sub" / "s.onnx", with_patches=True)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and _dims(graph.input[0]) == [1, 3, 256, 256]
    assert [o.name for o in graph.output] == ["logit", "patch_logits"]
    assert _dims(graph.output[0]) == [1, 1] and _dims(graph.output[1]) == [1, 1, 126, 126]
    assert any(n.op_type == "TopK" for n in graph.node)  # top-K pooling is exported as TopK
    x = torch.randn(1, 3, 256, 256)
    logit, patches = run_onnxruntime(path, x.numpy())
    with torch.no_grad():
        ref_logit, ref_patches = model.forward_with_patches(x)
    assert np.abs(logit - ref_logit.numpy()).max() < 1e-4
    assert np.abs(patches - ref_patches.numpy()).max() < 1e-4


def test_mean_pooled_published_student_and_small_teacher_export(tmp_path):
    student = TinyLaDeDa(pool="all")
    path = export_onnx(student, tmp_path / "mean.onnx")
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logit"]
    teacher = LaDeDa(width=4).eval()
    path = export_onnx(teacher, tmp_path / "teacher.onnx", with_patches=True)
    outputs = onnx.load(str(path)).graph.output
    assert _dims(outputs[1]) == [1, 1, 31, 31]


def test_topk_initializer_is_moved_into_a_constant_node(tmp_path):
    torch.manual_seed(1)
    path = export_onnx(TinyLaDeDa(), tmp_path / "s.onnx")
    model = onnx.load(str(path))
    # what onnx-simplifier does: K becomes an initializer (onnx2tf 1.28 + NumPy >= 2.4 crash on that)
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    const = next(n for n in model.graph.node if n.output[0] == topk.input[1])
    model.graph.node.remove(const)
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(const.attribute[0].t), topk.input[1])
    )
    assert topk_k_as_constant_nodes(model) == 1
    onnx.checker.check_model(model)
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    assert topk.input[1] not in {i.name for i in model.graph.initializer}
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    assert np.array_equal(run_onnxruntime(rewritten, x)[0], run_onnxruntime(path, x)[0])
    assert topk_k_as_constant_nodes(model) == 0


def test_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # running as root: simulate the read-only folder
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    try:
        with pytest.raises(ExportError, match="not writable"):
            export_onnx(TinyLaDeDa(), locked / "out" / "s.onnx")
        assert not (locked / "out").exists()
    finally:
        locked.chmod(0o700)


def test_output_below_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_onnx(TinyLaDeDa(), blocker / "s.onnx")
