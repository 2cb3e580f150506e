"""Decoding that keeps up with a 1 ms model: the fast resize, JPEG draft mode and decoding ahead in threads.

The student scores a 256×256 image in about 1 ms; preparing a 1080p picture through the reference path of
:mod:`ladeda_lib.data` (``resize_to_uint8``: the bicubic, antialiased resize computed in float) costs 40–100 ms on
the project's 2-core CPU. Three ways to spend less, each measured against that reference:

* :func:`resize_uint8` with ``method="fast"`` runs *the same* antialiased bicubic kernel (torchvision, ``a = -0.5``)
  in PyTorch's integer uint8 code path: about 2 ms for a 1080p frame instead of about 45 ms. Its pixels differ from
  the reference by at most a few grey levels (rounding of the fixed-point weights). Measured on 70 images
  (photographs from scikit-image and scikit-learn at their own size and as 720p / 1080p frames, toy images): max
  |Δ logit| 0.08 (``toy-student-plain``) and 0.10 (``toy-student-augmented``), no decision changed; on the 300
  images of the toy test split 1 and 2 decisions changed (logits that close to the threshold) and the augmented
  student's AP moved from 0.9680 to 0.9657 (``docs/benchmarks.md``). So it is the default for *video frames*, where
  real time needs it and H.264 itself moves pixels by more, and an option (``--resize fast``) for stills, which keep
  the reference that training and evaluation use.
* ``method="scaler"`` (videos only, :mod:`ladeda_lib.video`) lets FFmpeg's swscale resize inside the decoder, in
  YUV. It is *not* exact enough: up to 75 grey levels off at colour edges, max |Δ logit| 1.3 (plain student),
  3 of 70 decisions changed — and in our profile no faster than ``fast``.
* :func:`load_uint8` with ``draft=True`` asks libjpeg for a DCT-domain downscale (1/2, 1/4 or 1/8, never below
  256 pixels a side) before the bicubic resize: a 1080p JPEG decodes at 480×270, several times faster, but the image
  the model sees changes: on 24 photographs of at least 512 pixels saved as JPEG, max |Δ logit| 1.44 (plain
  student) and 0.20 (augmented), no decision changed; no toy image is large enough to be drafted, so the toy split
  cannot vouch for it. It stays an option (``--draft``), off by default.

:func:`prefetch` runs a loader in a thread pool *ahead* of the consumer, so decoding the next images overlaps with
scoring the current ones (decoders and resizes release the GIL). Introduced in notebook 10.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ladeda_lib.data import ImageLoadError, load_image, resize_to_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY, InputGeometry

#: Resize methods of the still and video paths: the float reference and the integer kernel.
RESIZE_METHODS = ("fast", "exact")

_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}

T = TypeVar("T")
R = TypeVar("R")


def resize_uint8(rgb: np.ndarray, method: str = "fast", geometry: InputGeometry = INPUT_GEOMETRY) -> torch.Tensor:
    """An RGB image (H, W, 3) uint8 → the model's uint8 input (3, S, S), S = 256.

    ``"exact"`` is :func:`ladeda_lib.data.resize_to_uint8` (the shared input geometry, computed in float);
    ``"fast"`` runs the same antialiased kernel on uint8 (see the module docstring for its measured error).
    Introduced in notebook 10.
    """
    if method == "exact":
        return resize_to_uint8(rgb, geometry)
    if method != "fast":
        raise ValueError(f"unknown resize method {method!r}; expected one of {', '.join(RESIZE_METHODS)}")
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"the fast resize takes an RGB uint8 array (H, W, 3), got {array.dtype} {array.shape}")
    if not array.flags.writeable:  # e.g. np.asarray of a PIL image; torch wants memory it may write
        array = array.copy()
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    size = [geometry.image_size, geometry.image_size]
    if list(x.shape[-2:]) == size:
        return x.contiguous()
    if geometry.interpolation not in _INTERPOLATION:
        return resize_to_uint8(array, geometry)  # only the antialiased kernels have an integer path
    y = TF.resize(x[None], size, interpolation=_INTERPOLATION[geometry.interpolation], antialias=geometry.antialias)
    return y[0].contiguous()


def load_uint8(
    path: str | os.PathLike, method: str = "fast", draft: bool = False, geometry: InputGeometry = INPUT_GEOMETRY
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode one image file and resize it: → (uint8 (3, S, S), (W, H) of the decoded image, EXIF applied).

    ``draft`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (the largest reduction that keeps both sides ≥ S)
    before the resize; the reported size is still the full image's. Errors as :func:`ladeda_lib.data.load_image`.
    Works behind notebook 10.
    """
    if not draft:
        pil = load_image(path)
        return resize_uint8(np.asarray(pil), method, geometry), pil.size
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            width, height = img.size
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            if img.format == "JPEG":
                img.draft("RGB", (geometry.image_size, geometry.image_size))
            img.load()
            pil = load_image(img)  # EXIF transpose, any mode → RGB
            size = (height, width) if turned else (width, height)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
    return resize_uint8(np.asarray(pil), method, geometry), size


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, ahead: int = 32) -> Iterator[R]:
    """``fn(item)`` for every item, in order, computed by ``workers`` threads up to ``ahead`` items in advance.

    The consumer scores item k while the pool decodes items k+1 … k+ahead. Exceptions from ``fn`` are raised
    when their item is reached, so wrap ``fn`` if a bad item must not stop the rest.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    pending: deque[Future[Any]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
