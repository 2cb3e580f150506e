"""Deterministic degradations of uint8 images: what a social network does to a picture on its way to a detector.

Each function takes a uint8 image ``(3, H, W)`` (or a batch ``(N, 3, H, W)``) and returns uint8; none uses
randomness, so the same input always gives the same output.

* :func:`jpeg` — encode and decode at a JPEG quality (PIL's libjpeg, 4:2:0 chroma, as the toy platforms save).
* :func:`rescale` — bicubic (antialiased) downscale by a factor: the image gets *smaller*.
  :func:`to_input_size` brings any image back to the model's input size through the shared input geometry
  (:func:`ladeda_lib.data.images.resize_to_uint8`), exactly as an uploaded file would be read.
* :func:`gaussian_blur` — Gaussian blur of a given sigma (kernel ``2·ceil(3σ) + 1``), torchvision's.
* :func:`center_crop` — the alternative to the project's whole-image resize: shorter side to the input
  size (aspect kept), then a centre crop; compared with the resize in ``ladeda robustness``.
* :class:`Degradation` and :func:`apply_chain` — steps as data, composed left to right and ended by
  :func:`to_input_size`, e.g. the platform chains ``rescale 0.5 → JPEG 65`` that the toy platforms
  (and real networks) apply. :func:`platform_chain` builds one from a toy :class:`PlatformStyle`.

Introduced in notebook 09.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ladeda_lib.data.images import resize_to_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY, InputGeometry

#: The kinds of :class:`Degradation` step, with the meaning of their ``value``.
KINDS = {
    "jpeg": "JPEG quality (1-95)",
    "rescale": "scale factor (0 < f <= 1: down, then back through the shared geometry)",
    "blur": "Gaussian sigma in pixels (0 = none)",
    "crop": "centre crop instead of resize (value unused)",
}


def _check_uint8(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
        got = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"{name} expects a uint8 tensor (3, H, W) or (N, 3, H, W), got {got}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"{name} expects a uint8 tensor (3, H, W) or (N, 3, H, W), got shape {tuple(image.shape)}")


def _per_image(image: torch.Tensor, fn) -> torch.Tensor:  # noqa: ANN001 - a (3, H, W) → (3, h, w) callable
    if image.dim() == 3:
        return fn(image)
    return torch.stack([fn(x) for x in image])


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()), mode="RGB")


def _from_pil(pil: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(pil.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode as JPEG at ``quality`` and decode again: uint8 (3, H, W) or (N, 3, H, W) → same shape.

    PIL (libjpeg) with its default 4:2:0 chroma subsampling, the encoder the toy platforms use.
    Deterministic. Introduced in notebook 09.
    """
    _check_uint8(image, "jpeg")
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must lie in [1, 100], got {quality}")

    def one(x: torch.Tensor) -> torch.Tensor:
        buf = BytesIO()
        _to_pil(x).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            return _from_pil(decoded)

    return _per_image(image, one)


def rescale(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Downscale by ``factor`` (bicubic, antialiased, as platforms resize uploads): (3, H, W) → (3, h, w).

    ``h = max(8, round(H * factor))`` (same for ``w``); ``factor = 1`` returns the image unchanged. The
    result is *smaller*: pass it through :func:`to_input_size` (or end a chain with :func:`apply_chain`) to
    return it to the model's input size through the shared geometry. Batches (N, 3, H, W) work too.
    Introduced in notebook 09.
    """
    _check_uint8(image, "rescale")
    factor = float(factor)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"rescale factor must lie in (0, 1] (a downscale), got {factor}")
    h, w = image.shape[-2:]
    size = [max(8, round(h * factor)), max(8, round(w * factor))]
    if size == [h, w]:
        return image.clone()
    batch = image if image.dim() == 4 else image[None]
    y = TF.resize(batch.float(), size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    y = y.round_().clamp_(0, 255).to(torch.uint8)
    return y if image.dim() == 4 else y[0]


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel ``2·ceil(3σ) + 1``, reflect padding).

    uint8 (3, H, W) or (N, 3, H, W) → same shape; ``sigma = 0`` returns a copy. Introduced in notebook 09.
    """
    _check_uint8(image, "gaussian_blur")
    sigma = float(sigma)
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return image.clone()
    k = 2 * math.ceil(3 * sigma) + 1
    y = TF.gaussian_blur(image.float(), kernel_size=[k, k], sigma=[sigma, sigma])
    return y.round_().clamp_(0, 255).to(torch.uint8)


def to_input_size(
    image: torch.Tensor, size: int | None = None, geometry: InputGeometry = INPUT_GEOMETRY
) -> torch.Tensor:
    """Back to the model input through the shared geometry: uint8 (3, h, w) → (3, S, S), S = ``size`` or 256.

    Uses :func:`~ladeda_lib.data.images.resize_to_uint8` (bicubic, antialiased, whole image to a square), the
    same arithmetic every image file goes through; ``size`` overrides the geometry's side (e.g. a 64-pixel
    training crop). Batches (N, 3, h, w) → (N, 3, S, S). Works behind notebook 09.
    """
    _check_uint8(image, "to_input_size")
    geom = geometry if size is None else replace(geometry, image_size=int(size))

    def one(x: torch.Tensor) -> torch.Tensor:
        return resize_to_uint8(x.permute(1, 2, 0).cpu().numpy(), geom)

    return _per_image(image, one)


def center_crop(image: torch.Tensor, geometry: InputGeometry = INPUT_GEOMETRY) -> torch.Tensor:
    """The crop alternative to the shared whole-image resize: uint8 (3, H, W) → (3, S, S), S = 256.

    The shorter side is resized to S (bicubic, antialiased; the aspect ratio is kept), then the central
    S×S square is cut out — torchvision's ``Resize(S)`` + ``CenterCrop(S)``. The project's own input path
    squashes the whole image to S×S instead (:func:`~ladeda_lib.data.images.resize_to_uint8`); a square image
    gives the same result both ways. Introduced in notebook 09.
    """
    _check_uint8(image, "center_crop")
    s = geometry.image_size
    interp = InterpolationMode[geometry.interpolation.upper()]

    def one(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) != s:
            short = [s, max(s, round(w * s / h))] if h <= w else [max(s, round(h * s / w)), s]
            x = TF.resize(x[None].float(), short, interpolation=interp, antialias=geometry.antialias)[0]
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        return TF.center_crop(x, [s, s]).contiguous()

    return _per_image(image, one)


@dataclass(frozen=True)
class Degradation:
    """One deterministic step: ``kind`` (a key of :data:`KINDS`) and its ``value``.

    ``Degradation("jpeg", 50)(x)`` is ``jpeg(x, 50)``; ``"rescale"`` returns the smaller image (see
    :func:`apply_chain` for the way back); ``"crop"`` is :func:`center_crop`.
    """

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown degradation {self.kind!r}; expected one of {sorted(KINDS)}")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.kind == "jpeg":
            return jpeg(image, int(self.value))
        if self.kind == "rescale":
            return rescale(image, self.value)
        if self.kind == "blur":
            return gaussian_blur(image, self.value)
        return center_crop(image)

    @property
    def label(self) -> str:
        """Short human name: ``"JPEG 50"``, ``"rescale 0.5"``, ``"blur 1"``, ``"centre crop"``."""
        if self.kind == "jpeg":
            return f"JPEG {int(self.value)}"
        if self.kind == "crop":
            return "centre crop"
        return f"{self.kind} {self.value:g}"


Chain = Sequence[Degradation]


def apply_chain(
    images: torch.Tensor, chain: Chain, size: int | None = None, geometry: InputGeometry = INPUT_GEOMETRY
) -> torch.Tensor:
    """Apply the steps of ``chain`` left to right, then return to the input size through the shared geometry.

    uint8 (N, 3, H, W) or (3, H, W) → (N, 3, S, S) / (3, S, S), S = ``size`` or the geometry's 256. An empty
    chain only resizes (a 256×256 input comes back unchanged). Deterministic. Introduced in notebook 09.
    """
    _check_uint8(images, "apply_chain")
    x = images
    for step in chain:
        x = step(x)
    s = int(size or geometry.image_size)
    if tuple(x.shape[-2:]) == (s, s):
        return x if chain else x.clone()
    return to_input_size(x, s, geometry)


def chain_label(chain: Chain) -> str:
    """``"rescale 0.5 → JPEG 65"``; ``"clean"`` for an empty chain."""
    return " → ".join(step.label for step in chain) if chain else "clean"


def platform_chain(style: object) -> tuple[Degradation, ...]:
    """The deterministic chain of a toy platform style: rescale by the middle of its range, then JPEG.

    ``style`` has ``scale`` and ``quality`` ranges (a :class:`ladeda_lib.data.toy.PlatformStyle`); the
    facebook-like style (×0.45-0.6, quality 60-70) gives ``rescale 0.525 → JPEG 65``.
    """
    lo, hi = style.scale  # type: ignore[attr-defined]
    qlo, qhi = style.quality  # type: ignore[attr-defined]
    factor = round((float(lo) + float(hi)) / 2, 3)
    steps = [Degradation("rescale", factor)] if factor < 1.0 else []
    return (*steps, Degradation("jpeg", round((qlo + qhi) / 2)))


def platform_chains() -> dict[str, tuple[Degradation, ...]]:
    """``{"twitter-like": chain, "facebook-like": chain, ...}`` from the toy platform styles (reddit excluded:
    it is the training platform's light JPEG)."""
    from ladeda_lib.data.toy import PLATFORM_STYLES

    return {f"{name}-like": platform_chain(style) for name, style in PLATFORM_STYLES.items() if name != "reddit"}


#: The degraded copies test-time augmentation averages over, in order (``--tta N`` uses the first N; the
#: first is the image itself): mild versions of what platforms do, so the copies stay close to the input.
TTA_CHAINS: tuple[tuple[Degradation, ...], ...] = (
    (),
    (Degradation("jpeg", 75),),
    (Degradation("rescale", 0.75),),
    (Degradation("blur", 0.6),),
    (Degradation("rescale", 0.5), Degradation("jpeg", 70)),
    (Degradation("jpeg", 50),),
    (Degradation("rescale", 0.6),),
    (Degradation("blur", 1.0),),
)


def tta_chains(n: int) -> tuple[tuple[Degradation, ...], ...]:
    """The first ``n`` of :data:`TTA_CHAINS` (1 = the image alone). Works behind notebook 09."""
    if not 1 <= int(n) <= len(TTA_CHAINS):
        raise ValueError(f"--tta must lie in [1, {len(TTA_CHAINS)}] copies, got {n}")
    return TTA_CHAINS[: int(n)]
