"""Deployment graphs: the same detector rewritten so that a runtime runs it fast or an int8 file keeps its decisions.

Every graph computes what the trained model computes (checked when built, :func:`~ladeda_lib.graphs.fused.check_same`):

* :mod:`~ladeda_lib.graphs.fused` — :func:`fold_batchnorm`, :func:`stem_kernel` (the student's filter, ``conv1``,
  ``conv2`` and ``bn1`` as one convolution), :class:`FusedTinyLaDeDa`, :func:`optimize_for_inference` (the
  optimised PyTorch path);
* :mod:`~ladeda_lib.graphs.column_pairs` — :class:`ColumnPairTinyLaDeDa`, the float export's graph (column pairs,
  pre-sorted top-K), :func:`deployable_student`;
* :mod:`~ladeda_lib.graphs.pixel_input` — :class:`PixelInputStudent`, the full-int8 graph (pixel input, zero-sum
  stem, head on its grid, biases corrected for rounding);
* :mod:`~ladeda_lib.graphs.equalize` — cross-layer channel equalization.

Introduced in notebook 08.
"""

from ladeda_lib.graphs.column_pairs import ColumnPairTinyLaDeDa, deployable_student
from ladeda_lib.graphs.equalize import equalize_channels
from ladeda_lib.graphs.fused import (
    FusedTinyLaDeDa,
    check_same,
    fold_batchnorm,
    fuse_student_stem,
    has_fusable_stem,
    optimize_for_inference,
    stem_kernel,
)
from ladeda_lib.graphs.pixel_input import PixelInputStudent

__all__ = [
    "ColumnPairTinyLaDeDa",
    "FusedTinyLaDeDa",
    "PixelInputStudent",
    "check_same",
    "deployable_student",
    "equalize_channels",
    "fold_batchnorm",
    "fuse_student_stem",
    "has_fusable_stem",
    "optimize_for_inference",
    "stem_kernel",
]
