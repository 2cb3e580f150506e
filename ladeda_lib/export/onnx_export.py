"""PyTorch → ONNX: the first step from a trained detector to a file that runs without PyTorch.

The exported graph has one input ``input`` — a float32 (1, 3, 256, 256) image in the shared
normalisation (:data:`ladeda_lib.geometry.INPUT_GEOMETRY`) — and the output ``logit`` (1, 1), optionally
followed by ``patch_logits`` (1, 1, h, w). We use the TorchScript exporter at opset 17: opset ≥ 18 turns
ReduceMean into a Flex op the LiteRT interpreter cannot run, and the dynamo exporter needs onnxscript.

Top-K pooling exports as an ONNX ``TopK`` whose K is a ``Constant`` node. That is the form onnx2tf 1.28
converts: when K is an *initializer* (what onnx-simplifier produces) its TopK converter calls ``int()`` on
a 1-element array, which NumPy ≥ 2.4 refuses. :func:`topk_k_as_constant_nodes` rewrites such graphs.
Introduced in notebook 08.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ladeda_lib.contract import INPUT_NAME, LOGIT_NAME, PATCH_NAME, DecisionCalibration, describe_model, write_sidecar
from ladeda_lib.export.errors import ExportError
from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.graphs.column_pairs import deployable_student
from ladeda_lib.graphs.fused import has_fusable_stem
from ladeda_lib.models import PatchDetector

#: Opset that converts cleanly to TFLite (see the module docstring).
DEFAULT_OPSET = 17


class ExportableDetector(nn.Module):
    """Wraps a :class:`PatchDetector` so ``forward`` returns exactly what the exported file returns.

    (1, 3, H, W) normalised → ``logit`` (1, 1), or ``(logit (1, 1), patch_logits (1, 1, h, w))``.

    * ``fuse``: Tiny-LaDeDa with a fixed filter (or raw input) runs as the deployed graph of
      :func:`~ladeda_lib.graphs.column_pairs.deployable_student` (``conv1``, ``conv2``, ``bn1`` as one
      convolution, full-resolution maps in column pairs, a pre-sorted top-K): the same outputs, less time.
    * ``decision_calibration``: ``(patch − offset) / temperature`` before pooling, so the file's logits are the
      calibrated ones (top-K mean and this affine map commute).
    """

    def __init__(
        self,
        model: PatchDetector,
        with_patches: bool = False,
        *,
        fuse: bool = True,
        decision_calibration: DecisionCalibration | None = None,
        image_size: int = INPUT_GEOMETRY.image_size,
    ) -> None:
        super().__init__()
        self.model = deployable_student(model, image_size) if fuse and has_fusable_stem(model) else model
        self.with_patches = with_patches
        self.offset = 0.0 if decision_calibration is None else float(decision_calibration.offset)
        self.temperature = 1.0 if decision_calibration is None else float(decision_calibration.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        patches = self.model.patch_logits(x)
        if self.offset != 0.0 or self.temperature != 1.0:
            patches = (patches - self.offset) * (1.0 / self.temperature)
        logit = self.model.pool(patches)
        return (logit, patches) if self.with_patches else logit


def check_writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and make sure we can write there; :class:`ExportError` otherwise."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ExportError(f"cannot write into {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write into {folder}: the folder {existing} is not writable")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the output folder {folder}: {err}") from err
    return folder


def export_onnx(
    model: PatchDetector,
    path: str | Path,
    with_patches: bool = False,
    opset: int = DEFAULT_OPSET,
    image_size: int = INPUT_GEOMETRY.image_size,
    verify: bool = True,
    rtol: float = 1e-4,
    *,
    fuse: bool = True,
    decision_calibration: DecisionCalibration | None = None,
) -> Path:
    """Export ``model`` to ONNX: ``input`` (1, 3, S, S) float32 → ``logit`` (1, 1) [, ``patch_logits``].

    The file passes ``onnx.checker``; with ``verify`` onnxruntime is run on a fixed-seed normalised input
    and its outputs must match the wrapper's PyTorch outputs within ``rtol`` of their magnitude (largest |value|,
    at least 1) (:class:`ExportError` otherwise).

    Args:
        model: a teacher or student (any :class:`PatchDetector`); it is exported in eval mode, on CPU.
        path: the ``.onnx`` file to write (its folder is created).
        with_patches: also export the patch-logit map (1, 1, h, w) as a second output.
        opset: ONNX opset (17 converts to TFLite cleanly).
        image_size: side S of the square input (the shared geometry's 256).
        verify: compare onnxruntime with PyTorch right away.
        rtol: largest allowed difference for ``verify``, relative to the output's magnitude (a published
            checkpoint's logits run into the thousands, where float32 itself differs by more than 1e-4).
        fuse, decision_calibration: see :class:`ExportableDetector`.
        The file's sidecar (:func:`~ladeda_lib.contract.describe_model`: architecture, config, patch geometry,
        input size, decision calibration) is written next to it.

    Returns:
        ``path``. Introduced in notebook 08.
    """
    import onnx

    path = Path(path)
    check_writable_folder(path.parent)
    was_training = model.training
    model = model.eval().cpu()
    wrapper = ExportableDetector(
        model, with_patches, fuse=fuse, decision_calibration=decision_calibration, image_size=image_size
    ).eval()
    example = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    output_names = [LOGIT_NAME, PATCH_NAME] if with_patches else [LOGIT_NAME]
    try:
        # tracing top-K records K as a constant (the input size is fixed), which is what we want
        expected = trace_to_onnx(wrapper, example, path, INPUT_NAME, output_names, opset)
    finally:
        model.train(was_training)
    onnx.checker.check_model(onnx.load(str(path)))
    if verify:
        check_against_onnxruntime(path, example, output_names, expected, rtol)
    write_sidecar(path, describe_model(model, decision_calibration, image_size))
    return path


def trace_to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    input_name: str,
    output_names: list[str],
    opset: int = DEFAULT_OPSET,
) -> tuple[torch.Tensor, ...]:
    """Write ``module`` traced on ``example`` to ``path`` with the TorchScript exporter (constant folding on, the
    tracer's warnings silenced); returns ``module(example)`` as a tuple, what the file must reproduce."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=output_names,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        expected = module(example)
    return expected if isinstance(expected, tuple) else (expected,)


def check_against_onnxruntime(
    path: str | Path, example: torch.Tensor, output_names: list[str], expected: tuple[torch.Tensor, ...], rtol: float
) -> None:
    """:class:`ExportError` unless onnxruntime's outputs on ``example`` match ``expected`` within ``rtol`` of their
    magnitude (largest |value|, at least 1)."""
    got = run_onnxruntime(path, example.numpy())
    for name, want, have in zip(output_names, expected, got, strict=True):
        diff = float(np.abs(want.numpy() - have).max())
        scale = max(1.0, float(np.abs(want.numpy()).max()))
        if diff > rtol * scale:
            raise ExportError(
                f"{path}: onnxruntime output {name!r} differs from PyTorch by {diff:.2e} on values up to "
                f"{scale:.3g} (limit {rtol:.0e} of that)"
            )


def run_onnxruntime(path: str | Path, x: np.ndarray, threads: int | None = None) -> list[np.ndarray]:
    """Run an ONNX file once on ``x`` (its input shape) with onnxruntime; outputs in graph order."""
    from ladeda_lib.predictors import OnnxPredictor

    session = OnnxPredictor(path, threads).session
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})


def topk_k_as_constant_nodes(onnx_model: object) -> int:
    """Move every ``TopK`` K that is an initializer into a ``Constant`` node, in place; returns how many.

    onnx2tf 1.28 reads an initializer K with ``int(array_of_shape_(1,))``, which raises ``TypeError`` under
    NumPy ≥ 2.4; a K produced by a ``Constant`` node is converted through TensorFlow and works. The graph
    computes exactly the same thing. Works behind notebook 08.
    """
    from onnx import helper

    graph = onnx_model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes, moved_names = [], set()
    for node in graph.node:
        if node.op_type == "TopK" and len(node.input) >= 2 and node.input[1] in initializers:
            init = initializers[node.input[1]]
            constant_name = f"{init.name}_as_constant_{len(nodes)}"
            nodes.append(helper.make_node("Constant", [], [constant_name], value=init))
            node.input[1] = constant_name
            moved_names.add(init.name)
        nodes.append(node)
    if moved_names:
        still_used = {name for node in nodes for name in node.input}
        for name in moved_names - still_used:
            graph.initializer.remove(initializers[name])
            for graph_input in [i for i in graph.input if i.name == name]:
                graph.input.remove(graph_input)
        new_nodes = [type(n)() for n in nodes]
        for new, old in zip(new_nodes, nodes, strict=True):
            new.CopyFrom(old)
        del graph.node[:]
        graph.node.extend(new_nodes)
    return len(moved_names)
