"""From a file (or PIL image, or array) to the tensor every model sees.

One code path for training, teacher targets, inference and quantization calibration:

``load_image`` (decode, EXIF orientation, any mode → RGB) → ``resize_to_uint8`` (bicubic, antialiased
resize to ``INPUT_GEOMETRY.image_size`` square, no crop, rounded to uint8) → ``normalize_uint8``
(ImageNet mean/std). :func:`preprocess` is exactly ``normalize_uint8(resize_to_uint8(x))``, so the
cached uint8 training tensors and a single image at inference time go through identical arithmetic.

Alpha (RGBA, LA, palette with transparency) is composited on a **white** background — the way a
browser or an image viewer shows a transparent PNG. 16-bit images are scaled to 8 bit by rounding
``v / 257`` (65535 → 255). PIL's decompression-bomb guard stays on: an image above
``PIL.Image.MAX_IMAGE_PIXELS`` raises :class:`ImageLoadError` instead of exhausting memory.
Introduced in notebook 02.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ladeda_lib.geometry import INPUT_GEOMETRY, InputGeometry

#: File extensions accepted as images (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

#: What the loading functions accept: a path, a PIL image, or an HWC / HW numpy array.
ImageLike = str | Path | Image.Image | np.ndarray

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


class ImageLoadError(ValueError):
    """An image could not be decoded (corrupt, truncated, not an image, too large); names the file."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB (alpha composited on white, 16-bit scaled, CMYK converted)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("PA", "La"):
        img = img.convert("RGBA")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        arr8 = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        arr8 = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: PIL's own conversions.
    return img.convert("RGB")


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    """HWC / HW array → RGB PIL image. uint8 as is; uint16 scaled by 1/257; float assumed in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an HWC array, got shape {a.shape} (looks like CHW: transpose it to HWC)")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype == np.uint8:
        a8 = a
    elif a.dtype == np.uint16:
        a8 = np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a8 = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported array dtype {a.dtype}: use uint8, uint16 or float in [0, 1]")
    mode = "L" if a8.ndim == 2 else ("RGB" if a8.shape[-1] == 3 else "RGBA")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(a8), mode=mode))


def load_image(image: ImageLike) -> Image.Image:
    """Decode an image to 8-bit RGB PIL, whatever its format or mode.

    Accepts a path (JPEG, PNG, WebP, BMP, TIFF), a PIL image or a numpy array (HWC or HW; uint8,
    uint16, or float in [0, 1]). Applies the EXIF orientation; alpha is composited on white; 16-bit is
    scaled to 8 bit; palette, grayscale, LA and CMYK are converted. A corrupt, truncated or oversized
    file raises :class:`ImageLoadError` naming the file. Introduced in notebook 02.
    """
    if isinstance(image, np.ndarray):
        return _array_to_pil(image)
    if isinstance(image, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(image))
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"{path}: image too large to decode safely ({err}); raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        ) from err
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as err:
        raise ImageLoadError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


def resize_to_uint8(image: ImageLike, geometry: InputGeometry = INPUT_GEOMETRY) -> torch.Tensor:
    """Decode and resize one image: anything :func:`load_image` accepts → uint8 tensor (3, S, S), S = 256.

    Bicubic (antialiased when shrinking) resize of the whole image to a square — no crop, so the aspect
    ratio is not kept — then rounded to uint8. This is the form the training cache stores.
    """
    pil = load_image(image)
    x = TF.pil_to_tensor(pil)  # (3, H, W) uint8
    size = [geometry.image_size, geometry.image_size]
    if list(x.shape[-2:]) == size:
        return x.contiguous()
    interp = _INTERPOLATION[geometry.interpolation]
    y = TF.resize(x.unsqueeze(0).float(), size, interpolation=interp, antialias=geometry.antialias)
    return y[0].round_().clamp_(0, 255).to(torch.uint8).contiguous()


def normalize_uint8(images: torch.Tensor, geometry: InputGeometry = INPUT_GEOMETRY) -> torch.Tensor:
    """uint8 images (B, 3, H, W) or (3, H, W) → float32 normalised with the geometry's mean/std, same shape."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_uint8 expects a uint8 tensor, got {images.dtype}")
    return geometry.normalize(images.to(torch.float32) / 255.0)


def preprocess(image: ImageLike, geometry: InputGeometry = INPUT_GEOMETRY) -> torch.Tensor:
    """The model input for one image: path / PIL / array → float32 (3, 256, 256), normalised.

    Exactly ``normalize_uint8(resize_to_uint8(image))``. Introduced in notebook 02.
    """
    return normalize_uint8(resize_to_uint8(image, geometry), geometry)


def normalised_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) images (or one (3, H, W)) → normalised float32 numpy (:func:`normalize_uint8`, as in
    training); float input is taken as already normalised. ``ValueError`` for any other shape."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = normalize_uint8(tensor)
    return tensor.float().numpy()


def load_mask(
    mask: str | Path | Image.Image | np.ndarray, size: int | tuple[int, int] = INPUT_GEOMETRY.image_size
) -> torch.Tensor:
    """A ground-truth mask (path, PIL image or array; white = generated) → bool (H, W), resized like the image
    (the whole mask to ``size``: a side for the square model grid, or (W, H) for the original image; nearest).
    Introduced in notebook 02."""
    if isinstance(mask, np.ndarray):
        pil = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    elif isinstance(mask, Image.Image):
        pil = mask
    else:
        with Image.open(mask) as img:
            pil = img.convert("L")
    target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    pil = pil.convert("L")
    if pil.size != target:
        pil = pil.resize(target, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(pil) >= 128)
