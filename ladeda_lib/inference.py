"""One inference API for every format a detector is deployed in, with patch heatmaps.

:class:`InferencePipeline` takes a model — a :class:`~ladeda_lib.models.PatchDetector`, a checkpoint
(ours or a published state_dict), an ``.onnx`` file (onnxruntime) or a ``.tflite`` file (LiteRT) — and
turns images into verdicts::

    pipe = InferencePipeline("weights/two_stage/student_final.pt")
    result = pipe.predict("photo.jpg")
    result["fake_probability"], result["patch_heatmap"].shape   # 0.93, (126, 126)

Every image goes through the shared preprocessing of :mod:`ladeda_lib.data` (decode, EXIF transpose,
bicubic resize to 256×256, ImageNet normalisation), so all formats see the same tensor.

For PyTorch models the pipeline runs an *inference copy* of the network: BatchNorm folded into the
convolutions (:func:`fold_batchnorm`) and channels-last memory format, under ``torch.inference_mode``.
On a CPU that is what brings batch-1 PyTorch latency close to onnxruntime (see
``benchmarks/bench_inference.py``). Introduced in notebook 06.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ladeda_lib.geometry import INPUT_GEOMETRY, PatchGeometry
from ladeda_lib.models import LaDeDa, PatchDetector, TinyLaDeDa, TopKPool
from ladeda_lib.models.pooling import KSpec

#: Keys of every result dict returned by :meth:`InferencePipeline.predict`.
RESULT_KEYS = ("is_fake", "fake_probability", "logit", "threshold", "patch_heatmap", "image_size")

ImageInput = str | os.PathLike | Any  # path, PIL image, numpy array (H, W[, C]) or torch tensor


# ----------------------------------------------------------------------------------------------------
# BatchNorm folding: an inference copy of a model with identical outputs
# ----------------------------------------------------------------------------------------------------
def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` for a BN in eval mode (running statistics)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fold_batchnorm(model: PatchDetector, check: bool = True) -> PatchDetector:
    """An inference copy of ``model`` with every BatchNorm folded into the convolution before it.

    BatchNorm in eval mode is an affine map per channel, ``y = γ (x − μ) / √(σ² + ε) + β``; after a
    convolution it can be merged into the convolution's weights and bias, saving a full pass over every
    feature map. A BatchNorm is folded into a ``Conv2d`` registered *immediately before it* in the same
    parent module (``conv2 → bn1`` in the stems, ``convN → bnN`` in the blocks, ``downsample.0 → .1``);
    the BN is replaced by ``nn.Identity``. The original model is not modified.

    Args:
        model: a teacher or student (any mode; the copy is put in eval mode and frozen).
        check: compare the copy with the original on a small random input and raise ``RuntimeError`` if
            they disagree (guards against a conv whose output is also used elsewhere).

    Returns:
        The folded copy: same ``forward``/``patch_logits`` outputs (B, 3, H, W) → (B, 1) / (B, 1, h, w)
        within float32 rounding, no BatchNorm left. Introduced in notebook 06.
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for prev, name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[prev], parent._modules[name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                parent._modules[prev] = _fold_conv_bn(conv, bn)
                parent._modules[name] = nn.Identity()
    folded.freeze()
    if check:
        model_was_training = model.training
        model.eval()
        probe = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
        param = next(model.parameters())
        probe = probe.to(device=param.device, dtype=param.dtype)
        with torch.inference_mode():
            want, got = model.patch_logits(probe), folded.patch_logits(probe)
        model.train(model_was_training)
        scale = float(want.abs().max().clamp_min(1.0))
        if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * scale):
            raise RuntimeError(
                f"folding BatchNorm changed the outputs of {type(model).__name__} "
                f"(max difference {float((want - got).abs().max()):.3g}); a convolution followed by a BatchNorm "
                "is probably also used elsewhere. Run the model unfolded."
            )
    return folded


class TorchRunner:
    """Runs a PatchDetector for inference: (B, 3, 256, 256) normalised → (logits (B,), patches (B, h, w)).

    ``optimize=True`` (default) runs :func:`fold_batchnorm`'s copy in channels-last memory format;
    ``False`` runs the model as given (eager, in eval mode) — the baseline the benchmark compares.
    """

    def __init__(self, model: PatchDetector, device: str | torch.device = "cpu", optimize: bool = True) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.optimize = optimize
        self.net = fold_batchnorm(self.model) if optimize else self.model
        if optimize:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.pool = self.model.pool

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float32 → (B, 1, h, w) patch logits (on the runner's device)."""
        x = x.to(self.device, torch.float32)
        if self.optimize:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.net.patch_logits(x).contiguous()

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        patches = self.patch_logits(x)
        with torch.inference_mode():
            logits = self.pool(patches)
        return logits.cpu().numpy().reshape(-1), patches[:, 0].cpu().numpy()


# ----------------------------------------------------------------------------------------------------
# Geometry of exported files (they carry a patch map but no architecture)
# ----------------------------------------------------------------------------------------------------
@functools.cache
def _reference_geometries() -> tuple[tuple[str, PatchGeometry], ...]:
    # Geometry depends only on the layer layout, not on the width: a width-1 teacher is enough.
    return (("TinyLaDeDa", TinyLaDeDa().geometry()), ("LaDeDa", LaDeDa(width=1).geometry()))


def geometry_for_grid(grid: int, input_size: int = INPUT_GEOMETRY.image_size) -> PatchGeometry:
    """The patch geometry of the default student or teacher whose grid at ``input_size`` has side ``grid``.

    Used when a heatmap comes from an exported file, which does not record its architecture:
    126 → Tiny-LaDeDa (``right_diag``: RF 7, stride 2, offset −1), 31 → LaDeDa (RF 9, stride 8).
    A student exported with another preprocessing has the same grid but a different offset; pass its
    ``model.geometry()`` explicitly in that case.
    """
    for _, geometry in _reference_geometries():
        if geometry.grid_size(input_size) == grid:
            return geometry
    known = ", ".join(f"{name}: {g.grid_size(input_size)}" for name, g in _reference_geometries())
    raise ValueError(f"no known model gives a {grid}×{grid} patch grid at {input_size}×{input_size} ({known})")


# ----------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------
def _describe(item: Any, index: int) -> str:
    if isinstance(item, str | os.PathLike):
        return str(item)
    return f"<{type(item).__name__} #{index}>"


def prepare_input(image: ImageInput) -> tuple[torch.Tensor, tuple[int, int]]:
    """Turn one input into the model tensor and the original size.

    Returns ``(x, (W, H))`` with ``x`` float32 (3, 256, 256) normalised.

    * path / PIL image / numpy array (H, W) or (H, W, C): decoded with :func:`ladeda_lib.data.load_image`
      (EXIF transpose, alpha on white, grayscale → RGB) and resized/normalised with
      :func:`ladeda_lib.data.preprocess`; ``(W, H)`` is the decoded image's size.
    * torch tensor: taken as *already preprocessed* when float of shape (3, 256, 256) or (1, 3, 256, 256)
      (normalised, as the models expect); a uint8 (3, 256, 256) tensor is the resized, not yet normalised
      image (:func:`ladeda_lib.data.resize_to_uint8`) and is normalised here. ``(W, H)`` is (256, 256).
      Any other tensor raises ``ValueError``.
    """
    from ladeda_lib.data import load_image, normalize_uint8, preprocess

    size = INPUT_GEOMETRY.image_size
    if isinstance(image, torch.Tensor):
        x = image.detach().cpu()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if tuple(x.shape) != INPUT_GEOMETRY.shape:
            raise ValueError(
                f"a tensor input must be one preprocessed image of shape {INPUT_GEOMETRY.shape} "
                f"(see ladeda_lib.data.preprocess), got {tuple(image.shape)}; pass a path, PIL image or "
                "numpy array to have it decoded and resized"
            )
        if x.dtype == torch.uint8:
            x = normalize_uint8(x)
        elif not x.is_floating_point():
            raise ValueError(f"a tensor input must be float (normalised) or uint8, got {x.dtype}")
        return x.to(torch.float32), (size, size)
    pil = load_image(image)
    return preprocess(pil), pil.size


# ----------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------
def _load_exported(path: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    from ladeda_lib.export.runners import OnnxModel, TFLiteModel

    return OnnxModel(path) if path.suffix.lower() == ".onnx" else TFLiteModel(path)


class InferencePipeline:
    """Images in, verdicts and patch heatmaps out — the same API for PyTorch, ONNX and TFLite models.

    Args:
        model: a :class:`~ladeda_lib.models.PatchDetector`; a checkpoint path (``.pt``/``.pth``: ours or a
            published state_dict, see :func:`~ladeda_lib.checkpoints.load_checkpoint`); an ``.onnx`` file
            (run with onnxruntime); or a ``.tflite`` file (run with the LiteRT interpreter).
        pooling: top-K used to pool the patch map into the image logit (a fraction, a count or ``"all"``),
            overriding the model's own. ``None`` keeps the model's (for exported files: the pooling baked in
            at export). Needs the patch map: an exported file without a ``patch_logits`` output rejects it.
        device: torch device for PyTorch models (exported files always run on the CPU).
        threshold: ``is_fake`` is ``fake_probability >= threshold``.
        optimize: PyTorch only — run the BatchNorm-folded channels-last copy (default) or the eager model.
        geometry: patch geometry of the heatmap; default: the model's own (PyTorch) or, for exported files,
            :func:`geometry_for_grid` of the default student/teacher with that grid.
        batch_size: default batch size of :meth:`predict_batch` / :meth:`predict_folder`.
        num_workers: threads decoding and resizing images in :meth:`predict_batch` (decoding releases the GIL).

    Results are dicts with :data:`RESULT_KEYS`: ``is_fake`` (bool), ``fake_probability`` (float in [0, 1],
    the sigmoid of the logit), ``logit`` (float), ``threshold`` (float), ``patch_heatmap`` (float32 numpy
    array of *patch logits*, (126, 126) for the student and (31, 31) for the teacher at 256×256; ``None``
    for an exported file exported without patch output) and ``image_size`` ((W, H) of the original image).
    Introduced in notebook 06.
    """

    def __init__(
        self,
        model: PatchDetector | str | os.PathLike,
        pooling: KSpec = None,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        *,
        optimize: bool = True,
        geometry: PatchGeometry | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
    ) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a probability and must lie in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.pool_override = TopKPool(pooling) if pooling is not None else None
        self.batch_size = int(batch_size)
        self.num_workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
        self.source: str = ""
        self.model: PatchDetector | None = None
        self._geometry = geometry
        self._exported: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None = None
        if isinstance(model, PatchDetector):
            self.model, self.source, self.backend = model, type(model).__name__, "pytorch"
        elif isinstance(model, str | os.PathLike):
            path = Path(model)
            if not path.exists():
                raise FileNotFoundError(f"model file not found: {path}")
            suffix = path.suffix.lower()
            self.source = str(path)
            if suffix in (".onnx", ".tflite"):
                self.backend = suffix[1:]
                self._exported = _load_exported(path)
            elif suffix in (".pt", ".pth", ".ckpt", ".bin") or path.is_file():
                from ladeda_lib.checkpoints import load_checkpoint

                self.model, self.backend = load_checkpoint(path).model, "pytorch"
            else:
                raise ValueError(f"{path}: expected a checkpoint (.pt/.pth), an .onnx or a .tflite file")
        else:
            raise TypeError(
                f"model must be a PatchDetector or a path to a .pt/.pth/.onnx/.tflite file, got {type(model).__name__}"
            )
        self._torch = TorchRunner(self.model, device, optimize) if self.model is not None else None

    def __repr__(self) -> str:
        pool = "model's" if self.pool_override is None else self.pool_override.extra_repr()
        return f"InferencePipeline({self.backend}: {self.source}, pooling={pool}, threshold={self.threshold})"

    # -- geometry -------------------------------------------------------------------------------------
    def geometry(self, grid: int | None = None) -> PatchGeometry:
        """Patch geometry of the heatmaps (see the ``geometry`` argument)."""
        if self._geometry is not None:
            return self._geometry
        if self.model is not None:
            return self.model.geometry()
        if grid is None:
            raise ValueError("the geometry of an exported file is known only from its patch grid; pass grid=")
        return geometry_for_grid(grid)

    # -- the model call -------------------------------------------------------------------------------
    def run_tensor(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the model: (B, 3, 256, 256) normalised → (logits (B,) float, patch logits (B, h, w) or None)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch (B, 3, H, W), got {tuple(x.shape)}")
        if self._torch is not None:
            logits, patches = self._torch(x)
        else:
            out_logit, out_patches = self._exported(x.detach().cpu().numpy().astype(np.float32))
            logits = np.asarray(out_logit, dtype=np.float32).reshape(-1)
            patches = None
            if out_patches is not None:
                patches = np.asarray(out_patches, dtype=np.float32).reshape(x.shape[0], *np.shape(out_patches)[-2:])
        if self.pool_override is not None:
            if patches is None:
                raise ValueError(
                    f"pooling={self.pool_override.spec!r} needs the patch map, but {self.source} has no "
                    "patch_logits output; re-export it with patches (ladeda export --with-patches) or drop pooling"
                )
            logits = self.pool_override(torch.from_numpy(patches)[:, None]).numpy().reshape(-1)
        return logits.astype(np.float32), patches

    def _result(self, logit: float, patches: np.ndarray | None, size: tuple[int, int]) -> dict[str, Any]:
        probability = 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))
        return {
            "is_fake": bool(probability >= self.threshold),
            "fake_probability": float(probability),
            "logit": float(logit),
            "threshold": self.threshold,
            "patch_heatmap": None if patches is None else np.ascontiguousarray(patches, dtype=np.float32),
            "image_size": (int(size[0]), int(size[1])),
        }

    # -- public API -----------------------------------------------------------------------------------
    def predict(self, image: ImageInput) -> dict[str, Any]:
        """Score one image (path, PIL image, numpy array or tensor; see :func:`prepare_input`).

        Returns a dict with :data:`RESULT_KEYS`. Raises ``ImageLoadError``/``FileNotFoundError`` for an
        unreadable file and ``ValueError`` for a tensor of the wrong shape.
        """
        x, size = prepare_input(image)
        logits, patches = self.run_tensor(x[None])
        return self._result(float(logits[0]), None if patches is None else patches[0], size)

    def predict_batch(
        self, images: Iterable[ImageInput], batch_size: int | None = None, progress: bool = True
    ) -> list[dict[str, Any]]:
        """Score many images in batches; one row per input, in order.

        Each row holds the :data:`RESULT_KEYS` plus ``source`` (the path, or ``<Type #i>``) and ``error``
        (``None``, or the message of an input that could not be read — then the other keys are ``None``).
        A bad input never aborts the batch. Images are decoded by ``num_workers`` threads while a tqdm bar
        (``progress``) counts them.
        """
        from tqdm.auto import tqdm

        images = list(images)
        batch_size = int(batch_size or self.batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rows: list[dict[str, Any]] = [None] * len(images)  # type: ignore[list-item]

        def load(index: int) -> tuple[int, torch.Tensor | None, tuple[int, int] | None, str | None]:
            try:
                x, size = prepare_input(images[index])
                return index, x, size, None
            except (ValueError, OSError, TypeError) as err:  # ImageLoadError is a ValueError
                return index, None, None, f"{type(err).__name__}: {err}"

        bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 1 else None
        try:
            for start in range(0, len(images), batch_size):
                indices = range(start, min(start + batch_size, len(images)))
                loaded = list(pool.map(load, indices)) if pool is not None else [load(i) for i in indices]
                good = [item for item in loaded if item[3] is None]
                for index, _, _, error in loaded:
                    if error is not None:
                        rows[index] = dict.fromkeys(RESULT_KEYS) | {"source": _describe(images[index], index)}
                        rows[index]["error"] = error
                if good:
                    logits, patches = self.run_tensor(torch.stack([item[1] for item in good]))
                    for k, (index, _, size, _) in enumerate(good):
                        row = self._result(float(logits[k]), None if patches is None else patches[k], size)
                        rows[index] = row | {"source": _describe(images[index], index), "error": None}
                bar.update(len(loaded))
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown()
        return rows

    def predict_folder(
        self, path: str | os.PathLike, recursive: bool = True, batch_size: int | None = None, progress: bool = True
    ) -> list[dict[str, Any]]:
        """Score every image file under ``path`` (see :func:`list_images`), sorted by path.

        Rows as in :meth:`predict_batch` (``source`` is the file path). Unreadable images get an ``error`` row.
        """
        files = list_images(path, recursive=recursive)
        return self.predict_batch(files, batch_size=batch_size, progress=progress)


def list_images(path: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files (by suffix, ``ladeda_lib.data.IMAGE_EXTENSIONS``) under a folder, sorted.

    Hidden files are skipped; raises ``ValueError`` if there are no images.
    """
    from ladeda_lib.data import IMAGE_EXTENSIONS

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files


# ----------------------------------------------------------------------------------------------------
# CLI: ladeda predict
# ----------------------------------------------------------------------------------------------------
def _expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files to score and error rows for inputs that do not exist / hold no images."""
    files: list[Path] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        path = Path(item)
        try:
            files.extend(list_images(path) if path.is_dir() else [path])
        except (FileNotFoundError, ValueError) as err:
            errors.append(dict.fromkeys(RESULT_KEYS) | {"source": str(path), "error": str(err)})
    return files, errors


def _run_predict(args: argparse.Namespace) -> int:
    pipe = InferencePipeline(args.model, pooling=args.pooling, threshold=args.threshold, batch_size=args.batch_size)
    files, errors = _expand_inputs(args.inputs)
    rows = pipe.predict_batch(files, progress=sys.stderr.isatty()) if files else []
    rows += errors
    heatmap_dir = Path(args.heatmap_dir) if args.heatmap_dir else None
    if heatmap_dir is not None:
        from ladeda_lib.viz import visualize_heatmap

        heatmap_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for row in rows:
            if row["error"] is None and row["patch_heatmap"] is not None:
                name, n = f"{Path(row['source']).stem}_heatmap.png", 1
                while name in used:  # same file name in two folders: number the later ones
                    n += 1
                    name = f"{Path(row['source']).stem}_{n}_heatmap.png"
                used.add(name)
                grid = row["patch_heatmap"].shape[-1]
                out = visualize_heatmap(row["source"], row, heatmap_dir / name, geometry=pipe.geometry(grid))
                row["heatmap"] = str(out)
    if args.json:
        for row in rows:
            keys = ("source", "fake_probability", "is_fake", "logit", "threshold", "image_size", "error", "heatmap")
            record = {("file" if k == "source" else k): row.get(k) for k in keys if k in row}
            if record.get("image_size") is not None:
                record["image_size"] = list(record["image_size"])
            print(json.dumps(record))
    else:
        width = max([len("file"), *(len(str(r["source"])) for r in rows)])
        print(f"{'file':<{width}}  {'fake_probability':>16}  {'is_fake':>7}")
        for row in rows:
            if row["error"] is not None:
                print(f"{row['source']:<{width}}  {'ERROR':>16}  {'-':>7}  {row['error']}")
            else:
                print(f"{row['source']:<{width}}  {row['fake_probability']:>16.4f}  {str(row['is_fake']):>7}")
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        print(f"ladeda predict: {failed} of {len(rows)} inputs could not be scored", file=sys.stderr)
    return 1 if failed else 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda predict``."""
    p = subparsers.add_parser(
        "predict",
        help="score images or folders with a checkpoint, .onnx or .tflite model",
        description="Print fake probabilities (a table, or one JSON object per line). Exit status 1 if any "
        "input could not be scored (after reporting the rest).",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--model", required=True, help="checkpoint (.pt/.pth), .onnx or .tflite file")
    p.add_argument("--heatmap-dir", default=None, help="also write a heatmap PNG per image here")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--threshold", type=float, default=0.5, help="fake if probability >= threshold (default 0.5)")
    p.add_argument("--pooling", default=None, help="override top-K pooling: a fraction, a count or 'all'")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    p.set_defaults(func=_run_predict)
