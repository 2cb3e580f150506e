"""Data: image loading and preprocessing, dataset detection, the uint8 training cache, the toy dataset.

* :mod:`~ladeda_lib.data.images`  — ``load_image``, ``resize_to_uint8``, ``normalize_uint8``, ``preprocess``,
  ``normalised_images`` (a batch, uint8 or normalised), ``load_mask``
* :mod:`~ladeda_lib.data.layouts` — ``detect_dataset`` (WildRF tree / class folder / CSV), ``Sample``,
  ``DatasetIndex``, ``holdout_split``, ``resolve_dataset`` (no data given → the toy set)
* :mod:`~ladeda_lib.data.tensors` — ``load_tensors`` → ``ImageTensors`` (N, 3, 256, 256) uint8, cached
* :mod:`~ladeda_lib.data.toy`     — ``make_toy_dataset``, ``ensure_toy_dataset``
* :mod:`~ladeda_lib.data.photos`  — the photo-backed toy world (``make_toy_dataset(..., world="photos")``):
  photographs shipped in installed packages (``find_bundled``) as the real class, split by photograph
* :mod:`~ladeda_lib.data.cli`     — ``ladeda data-info``, ``ladeda make-toy-data``

Masks of spliced (partial) fakes live in a parallel tree under the dataset root:
``ROOT/masks/<split>[/<platform>]/1_fake/<image name>.png`` (white = generated region, same size as the
image); ``detect_dataset`` attaches them as ``Sample.mask``. Introduced in notebook 02.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ladeda_lib.data.cli import register_cli

# Public names → submodule. Imported on first use (PEP 562), so ``ladeda --help`` does not pay for
# torchvision and scipy.
_LAZY = {
    "IMAGE_EXTENSIONS": "images",
    "ImageLoadError": "images",
    "load_image": "images",
    "load_mask": "images",
    "normalize_uint8": "images",
    "preprocess": "images",
    "resize_to_uint8": "images",
    "DatasetIndex": "layouts",
    "DatasetLayoutError": "layouts",
    "DatasetProblems": "layouts",
    "Sample": "layouts",
    "detect_dataset": "layouts",
    "holdout_split": "layouts",
    "resolve_dataset": "layouts",
    "ImageTensors": "tensors",
    "load_tensors": "tensors",
    "ToyConfig": "toy",
    "ensure_toy_dataset": "toy",
    "make_toy_dataset": "toy",
    "render_toy_image": "toy",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"ladeda_lib.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ladeda_lib.data' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and IDEs
    from ladeda_lib.data.images import (
        IMAGE_EXTENSIONS,
        ImageLoadError,
        load_image,
        load_mask,
        normalize_uint8,
        preprocess,
        resize_to_uint8,
    )
    from ladeda_lib.data.layouts import (
        DatasetIndex,
        DatasetLayoutError,
        DatasetProblems,
        Sample,
        detect_dataset,
        holdout_split,
        resolve_dataset,
    )
    from ladeda_lib.data.tensors import ImageTensors, load_tensors
    from ladeda_lib.data.toy import ToyConfig, ensure_toy_dataset, make_toy_dataset, render_toy_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetIndex",
    "DatasetLayoutError",
    "DatasetProblems",
    "ImageLoadError",
    "ImageTensors",
    "Sample",
    "ToyConfig",
    "detect_dataset",
    "ensure_toy_dataset",
    "holdout_split",
    "load_image",
    "load_mask",
    "load_tensors",
    "make_toy_dataset",
    "normalize_uint8",
    "preprocess",
    "register_cli",
    "resolve_dataset",
    "render_toy_image",
    "resize_to_uint8",
]
