"""One inference API for every format a detector is deployed in, with patch heatmaps.

:class:`InferencePipeline` takes a model — a :class:`~ladeda_lib.models.PatchDetector`, a checkpoint
(ours or a published state_dict), an ``.onnx`` file (onnxruntime) or a ``.tflite`` file (LiteRT) — and
turns images into verdicts::

    pipe = InferencePipeline("weights/two_stage/student_final.pt")
    result = pipe.predict("photo.jpg")
    result["fake_probability"], result["patch_heatmap"].shape   # 0.93, (126, 126)

Every image is decoded once with the shared preprocessing of :mod:`ladeda_lib.data` (decode, EXIF transpose,
bicubic resize to 256×256 uint8); the predictor turns those pixels into what its model takes (ImageNet
normalisation, or ``pixel − 128`` for a pixel-input int8 file), so all formats see the same image.

Every format runs through :mod:`ladeda_lib.predictors` (one loader, one thread policy); for PyTorch models that
is the optimised inference copy (fused stem / BatchNorm folded, channels-last, ``torch.inference_mode``).
A model that carries a calibration (``ladeda calibrate``) gives calibrated logits; one that carries none is
flagged (:attr:`InferencePipeline.calibrated`), and ``unsure=(low, high)`` answers "unsure" for probabilities
in that band. Introduced in notebook 06.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import NO_CALIBRATION_NOTE, DecisionCalibration, ModelFileError, model_kind, sigmoid
from ladeda_lib.decode import prefetch
from ladeda_lib.geometry import INPUT_GEOMETRY, PatchGeometry
from ladeda_lib.models import PatchDetector, TopKPool
from ladeda_lib.models.pooling import KSpec
from ladeda_lib.predictors import Predictor, TorchPredictor, load_predictor
from ladeda_lib.runner import predict

#: Keys of every result dict returned by :meth:`InferencePipeline.predict`.
RESULT_KEYS = (
    "is_fake",
    "verdict",
    "fake_probability",
    "logit",
    "threshold",
    "calibrated",
    "patch_heatmap",
    "image_size",
)

__all__ = ["RESULT_KEYS", "InferencePipeline", "list_images", "prepare_input"]

ImageInput = str | os.PathLike | Any  # path, PIL image, numpy array (H, W[, C]) or torch tensor


# ----------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------
def _describe(item: Any, index: int) -> str:
    if isinstance(item, str | os.PathLike):
        return str(item)
    return f"<{type(item).__name__} #{index}>"


def decode_input(image: ImageInput) -> tuple[torch.Tensor, tuple[int, int], Any]:
    """:func:`prepare_input` plus what to draw a heatmap on: ``(x, (W, H), display)`` where ``display`` is the
    decoded PIL image (or the tensor itself), so a heatmap never decodes the file a second time."""
    from ladeda_lib.data import load_image, resize_to_uint8

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
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"a tensor input must be float (normalised) or uint8, got {x.dtype}")
        x = x if x.dtype == torch.uint8 else x.to(torch.float32)
        return x, (size, size), x
    pil = load_image(image)
    return resize_to_uint8(pil), pil.size, pil


def prepare_input(image: ImageInput) -> tuple[torch.Tensor, tuple[int, int]]:
    """Turn one input into the model's image and the original size.

    Returns ``(x, (W, H))`` with ``x`` (3, 256, 256): uint8 pixels, or the float tensor given.

    * path / PIL image / numpy array (H, W) or (H, W, C): decoded with :func:`ladeda_lib.data.load_image`
      (EXIF transpose, alpha on white, grayscale → RGB) and resized with :func:`ladeda_lib.data.resize_to_uint8`
      (uint8; the predictor normalises it, exactly :func:`ladeda_lib.data.preprocess`); ``(W, H)`` is the decoded
      image's size.
    * torch tensor: a uint8 (3, 256, 256) tensor is the resized image; a float one of shape (3, 256, 256) or
      (1, 3, 256, 256) is taken as *already preprocessed* (normalised). ``(W, H)`` is (256, 256).
      Any other tensor raises ``ValueError``.
    """
    x, size, _ = decode_input(image)
    return x, size


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch of images from :func:`prepare_input`: uint8 when all are, normalised float otherwise."""
    from ladeda_lib.data import normalize_uint8

    if any(x.dtype != torch.uint8 for x in images):
        images = [normalize_uint8(x) if x.dtype == torch.uint8 else x for x in images]
    return torch.stack(images)


# ----------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------
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
        geometry: patch geometry of the heatmap; default: the model's own (PyTorch) or, for exported files, the
            one their sidecar states (``<file>.ladeda.json``; a file without one needs this argument).
        batch_size: default batch size of :meth:`predict_batch` / :meth:`predict_folder`.
        num_workers: threads decoding and resizing images in :meth:`predict_batch` (decoding releases the GIL).
        threads: threads of the model's backend (:func:`~ladeda_lib.timing.resolve_threads`).
        unsure: ``(low, high)`` probabilities: results in ``[low, high]`` get ``verdict="unsure"`` and
            ``is_fake=None`` instead of a decision.

    Results are dicts with :data:`RESULT_KEYS`: ``is_fake`` (bool, None inside the unsure band), ``verdict``
    ("real", "fake" or "unsure"), ``calibrated`` (whether the model carries a calibration), ``fake_probability`` (float in [0, 1],
    the sigmoid of the logit), ``logit`` (float), ``threshold`` (float), ``patch_heatmap`` (float32 numpy
    array of *patch logits*, (126, 126) for the student and (31, 31) for the teacher at 256×256; ``None``
    for an exported file exported without patch output) and ``image_size`` ((W, H) of the original image).
    Besides these, each result carries ``geometry``: the :class:`~ladeda_lib.geometry.PatchGeometry` of its
    patch map (None without one, or for an exported file without a sidecar), which the heatmap figures use.
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
        threads: int | None = None,
        unsure: tuple[float, float] | None = None,
    ) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a probability and must lie in [0, 1], got {threshold}")
        if unsure is not None and not (0.0 <= unsure[0] <= threshold <= unsure[1] <= 1.0):
            raise ValueError(
                f"the unsure band (LOW, HIGH) must satisfy 0 <= LOW <= threshold <= HIGH <= 1, got {unsure}"
            )
        self.threshold = float(threshold)
        self.unsure = None if unsure is None else (float(unsure[0]), float(unsure[1]))
        self.pooling = pooling  # the predictor pools with it; kept for the repr
        self.batch_size = int(batch_size)
        self.num_workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
        self.model: PatchDetector | None = None
        self._geometry = geometry
        if not isinstance(model, PatchDetector | str | os.PathLike):
            raise TypeError(
                f"model must be a PatchDetector or a path to a .pt/.pth/.onnx/.tflite file, got {type(model).__name__}"
            )
        self.predictor: Predictor = load_predictor(
            model, threads=threads, device=device, optimize=optimize, pooling=pooling
        )
        if isinstance(model, PatchDetector):
            self.source = type(model).__name__
        else:
            self.source = str(model)
        if isinstance(self.predictor, TorchPredictor):
            self.model, self.backend = self.predictor.model, "pytorch"
        else:
            self.backend = model_kind(model)

    @property
    def calibration(self) -> DecisionCalibration | None:
        """The model's calibration record (``ladeda calibrate``), or None."""
        return self.predictor.calibration

    @property
    def calibrated(self) -> bool:
        """Whether the model carries a calibration record; without one its threshold may mean little."""
        return self.predictor.calibration is not None

    @property
    def calibration_note(self) -> str | None:
        """What to tell the user when the model carries no calibration record (None when it does)."""
        return None if self.calibrated else NO_CALIBRATION_NOTE

    def __repr__(self) -> str:
        pool = "model's" if self.pooling is None else TopKPool(self.pooling).extra_repr()
        return f"InferencePipeline({self.backend}: {self.source}, pooling={pool}, threshold={self.threshold})"

    # -- geometry -------------------------------------------------------------------------------------
    def geometry(self) -> PatchGeometry:
        """Patch geometry of the heatmaps: the ``geometry`` argument, else the model's own (PyTorch) or what the
        exported file's sidecar states; :class:`~ladeda_lib.contract.ModelFileError` for a file without one."""
        geometry = self._geometry or self.predictor.geometry
        if geometry is None:
            raise ModelFileError(
                f"{self.source}: no sidecar ({self.source}.ladeda.json) says which model made this file, so its "
                "patch map cannot be placed on the image; re-export it with ladeda export, or pass "
                "InferencePipeline(..., geometry=model.geometry())"
            )
        return geometry

    # -- the model call -------------------------------------------------------------------------------
    def run_tensor(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the model: (B, 3, 256, 256) uint8 or normalised → (logits (B,) float, patch logits (B, h, w) or None).

        The logit is the one the predictor pools (with ``pooling``: the override's top-K), never pooled again."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch (B, 3, H, W), got {tuple(x.shape)}")
        logits, patches = predict(self.predictor, x, batch_size=len(x), keep_patches=True)  # the one scoring loop
        return logits.numpy(), None if patches is None else patches[:, 0].numpy()

    def verdict(self, probability: float) -> str:
        """``"real"``, ``"fake"`` or ``"unsure"`` for a fake probability, by this pipeline's threshold and band."""
        if self.unsure is not None and self.unsure[0] <= probability <= self.unsure[1]:
            return "unsure"
        return "fake" if probability >= self.threshold else "real"

    def result_for(self, logit: float, patches: np.ndarray | None, size: tuple[int, int]) -> dict[str, Any]:
        """The result dict (:data:`RESULT_KEYS`) of one image logit, its patch map (h, w) or None, and (W, H)."""
        probability = float(sigmoid(logit))
        verdict = self.verdict(probability)
        return {
            "is_fake": None if verdict == "unsure" else verdict == "fake",
            "verdict": verdict,
            "fake_probability": float(probability),
            "logit": float(logit),
            "threshold": self.threshold,
            "calibrated": self.calibrated,
            "patch_heatmap": None if patches is None else np.ascontiguousarray(patches, dtype=np.float32),
            "image_size": (int(size[0]), int(size[1])),
            "geometry": None if patches is None else (self._geometry or self.predictor.geometry),
        }

    # -- public API -----------------------------------------------------------------------------------
    def predict(self, image: ImageInput) -> dict[str, Any]:
        """Score one image (path, PIL image, numpy array or tensor; see :func:`prepare_input`).

        Returns a dict with :data:`RESULT_KEYS`. Raises ``ImageLoadError``/``FileNotFoundError`` for an
        unreadable file and ``ValueError`` for a tensor of the wrong shape.
        """
        x, size = prepare_input(image)
        logits, patches = self.run_tensor(x[None])
        return self.result_for(float(logits[0]), None if patches is None else patches[0], size)

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        batch_size: int | None = None,
        progress: bool = True,
        loader: Callable[[ImageInput], tuple[torch.Tensor, tuple[int, int], Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Score many images in batches; one row per input, in order.

        Each row holds the :data:`RESULT_KEYS` plus ``source`` (the path, or ``<Type #i>``) and ``error``
        (``None``, or the message of an input that could not be read — then the other keys are ``None``).
        A bad input never aborts the batch. Images are decoded by ``num_workers`` threads up to two batches ahead
        of the model, so decoding overlaps with scoring, while a tqdm bar (``progress``) counts them.
        ``loader`` turns one input into ``(x, (W, H), display)`` (see :func:`decode_input`, the default):
        ``x`` uint8 (3, 256, 256) or normalised float, ``display`` what a heatmap is drawn on (or None).
        """
        return list(self.iter_predictions(images, batch_size, progress, loader=loader))

    def iter_predictions(
        self,
        images: Iterable[ImageInput],
        batch_size: int | None = None,
        progress: bool = True,
        keep_images: bool = False,
        loader: Callable[[ImageInput], tuple[torch.Tensor, tuple[int, int], Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The rows of :meth:`predict_batch`, one batch at a time; with ``keep_images`` each good row also holds
        ``image``: the decoded image (PIL) to draw its heatmap on, so nothing is decoded twice."""
        from tqdm.auto import tqdm

        images = list(images)
        batch_size = int(batch_size or self.batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        load_one = loader or decode_input

        def load(index: int) -> tuple[int, Any, tuple[int, int] | None, Any, str | None]:
            try:
                x, size, display = load_one(images[index])
                return index, x, size, display, None
            except (ValueError, OSError, TypeError) as err:  # ImageLoadError is a ValueError
                return index, None, None, None, f"{type(err).__name__}: {err}"

        def score(loaded: list[tuple[int, Any, tuple[int, int] | None, Any, str | None]]) -> Iterator[dict[str, Any]]:
            good = [item for item in loaded if item[4] is None]
            scored: dict[int, dict[str, Any]] = {}
            if good:
                logits, patches = self.run_tensor(_stack([item[1] for item in good]))
                for k, (index, _, size, display, _) in enumerate(good):
                    row = self.result_for(float(logits[k]), None if patches is None else patches[k], size)
                    scored[index] = row | {"source": _describe(images[index], index), "error": None}
                    if keep_images:
                        scored[index]["image"] = display
            bar.update(len(loaded))
            for index, _, _, _, error in loaded:
                if error is not None:
                    yield dict.fromkeys(RESULT_KEYS) | {"source": _describe(images[index], index), "error": error}
                else:
                    yield scored[index]

        bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
        try:
            # decoding runs in num_workers threads up to two batches ahead of the model (ladeda_lib.decode.prefetch)
            loaded: list[Any] = []
            for item in prefetch(load, range(len(images)), self.num_workers, ahead=2 * batch_size):
                loaded.append(item)
                if len(loaded) == batch_size:
                    yield from score(loaded)
                    loaded = []
            if loaded:
                yield from score(loaded)
        finally:
            bar.close()

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
