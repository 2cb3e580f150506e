"""Geometry in one place: the input geometry every stage shares, and patch geometry of the models.

Two ideas live here.

* :class:`InputGeometry` — how an image becomes a tensor: bicubic resize to 256×256 (no crop, no
  augmentation) and ImageNet normalisation. It is read from ``ladeda_lib/config/geometry.json`` so
  training, teacher targets, inference and quantization calibration can never disagree.
  Introduced in notebook 02.
* :class:`PatchGeometry` — which input pixels a patch logit sees: receptive field, stride and offset.
  It is *derived* from a model's layers by :func:`trace_geometry`, never typed in, and it drives the
  student→teacher alignment (:func:`align_indices`) and the placement of heatmaps on images.
  Introduced in notebook 01 (teacher) and notebook 04 (alignment).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

GEOMETRY_CONFIG = Path(__file__).parent / "config" / "geometry.json"


@dataclass(frozen=True)
class InputGeometry:
    """Shared input geometry: square resize size, interpolation and normalisation statistics."""

    image_size: int = 256
    interpolation: str = "bicubic"
    antialias: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one preprocessed image."""
        return (3, self.image_size, self.image_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a float image in [0, 1] of shape (..., 3, H, W) to normalised values."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: (..., 3, H, W) normalised → [0, 1] (not clipped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return x * std + mean


def load_input_geometry(path: str | Path = GEOMETRY_CONFIG) -> InputGeometry:
    """Read an :class:`InputGeometry` from a JSON file (default: the package's ``geometry.json``)."""
    raw = json.loads(Path(path).read_text())
    unknown = set(raw) - set(InputGeometry.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown input-geometry keys {sorted(unknown)}")
    for key in ("mean", "std"):
        if key in raw:
            raw[key] = tuple(float(v) for v in raw[key])
    return InputGeometry(**raw)


#: The geometry every part of the project uses.
INPUT_GEOMETRY = load_input_geometry()


@dataclass(frozen=True)
class LayerSpec:
    """One spatial step on a model's main path: a (square) kernel, a stride and a padding."""

    kernel: int
    stride: int = 1
    padding: int = 0
    name: str = ""


@dataclass(frozen=True)
class PatchGeometry:
    """Where the patch logits of a model sit on its input.

    Patch ``(i, j)`` sees input rows ``offset + stride*i … offset + stride*i + receptive_field - 1``
    (and the same for columns). A negative offset means the first patches reach into the zero padding.
    """

    receptive_field: int
    stride: int
    offset: int
    layers: tuple[LayerSpec, ...] = field(default=(), compare=False, repr=False)

    def grid_size(self, input_size: int) -> int:
        """Number of patch logits along one side for an ``input_size`` input (e.g. 256 → 31)."""
        n = input_size
        for layer in self.layers:
            n = (n + 2 * layer.padding - layer.kernel) // layer.stride + 1
        if n < 1:
            raise ValueError(f"input size {input_size} is too small for this model")
        return n

    def span(self, i: int) -> tuple[int, int]:
        """Input index range ``[start, stop)`` seen by patch row/column ``i``."""
        start = self.offset + self.stride * i
        return start, start + self.receptive_field

    def patch_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input box of patch (i, j), bottom/right exclusive."""
        top, bottom = self.span(i)
        left, right = self.span(j)
        return top, left, bottom, right

    def centre(self, i: int | float) -> float:
        """Input coordinate (pixel index) of the centre of patch row/column ``i``."""
        return self.offset + self.stride * i + (self.receptive_field - 1) / 2

    def centres(self, input_size: int) -> torch.Tensor:
        """Centres of all patch rows for an ``input_size`` input, shape (grid_size,)."""
        n = self.grid_size(input_size)
        return self.offset + self.stride * torch.arange(n, dtype=torch.float64) + (self.receptive_field - 1) / 2


def trace_geometry(layers: Iterable[LayerSpec]) -> PatchGeometry:
    """Derive receptive field, stride and offset from the spatial layers of a main path.

    Standard recurrence: each layer of kernel ``k``, stride ``s`` and padding ``p`` grows the receptive
    field by ``(k - 1) * jump`` and shifts the offset by ``-p * jump``; the jump multiplies by ``s``.
    """
    layers = tuple(layers)
    rf, jump, offset = 1, 1, 0
    for layer in layers:
        rf += (layer.kernel - 1) * jump
        offset -= layer.padding * jump
        jump *= layer.stride
    return PatchGeometry(receptive_field=rf, stride=jump, offset=offset, layers=layers)


def conv_spec(conv: torch.nn.Module, name: str = "") -> LayerSpec:
    """Read a :class:`LayerSpec` off a square-kernel module with ``kernel_size/stride/padding``."""

    def first(v: int | Sequence[int]) -> int:
        return int(v[0]) if isinstance(v, Sequence) else int(v)

    padding = conv.padding
    if isinstance(padding, str):  # "same" with an odd kernel pads (k - 1) / 2 on each side
        if padding != "same":
            padding = 0
        else:
            padding = (first(conv.kernel_size) - 1) // 2
    return LayerSpec(first(conv.kernel_size), first(conv.stride), first(padding), name)


def align_indices(
    student: PatchGeometry, teacher: PatchGeometry, input_size: int = INPUT_GEOMETRY.image_size
) -> torch.Tensor:
    """Student patch rows whose receptive fields are centred on each teacher patch row.

    For every teacher row ``I`` it returns the student row ``i`` whose receptive-field centre is closest
    to the teacher's centre (for LaDeDa/Tiny-LaDeDa at 256: ``i = 4 I + 1``, and that student patch lies
    entirely inside the teacher patch). The same indices serve for columns. Shape (teacher_grid,).
    Introduced in notebook 04.
    """
    teacher_centres = teacher.centres(input_size)
    n_student = student.grid_size(input_size)
    idx = torch.round((teacher_centres - student.offset - (student.receptive_field - 1) / 2) / student.stride)
    idx = idx.long()
    if idx.min() < 0 or idx.max() >= n_student:
        raise ValueError(
            f"teacher grid does not fit inside the student grid at input size {input_size}: "
            f"needs student rows {int(idx.min())}..{int(idx.max())}, student has 0..{n_student - 1}"
        )
    return idx


def align_student_to_teacher(student_logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Pick the student logits aligned with the teacher grid.

    ``(B, 1, Hs, Ws) → (B, 1, Ht, Wt)`` with ``Ht = Wt = len(indices)``. Differentiable.
    """
    indices = indices.to(student_logits.device)
    return student_logits.index_select(-2, indices).index_select(-1, indices)


def upsample_patch_map(
    patch_map: torch.Tensor, geometry: PatchGeometry, input_size: int, out_hw: tuple[int, int] | None = None
) -> torch.Tensor:
    """Place a patch map on the input pixel grid by the receptive-field geometry.

    Every input pixel gets the mean of the logits of all patches whose receptive field covers it
    (pixels no patch covers get the nearest patch's value). ``(H, W)`` or ``(B, 1, H, W)`` patch map →
    same leading dims with ``(input_size, input_size)``, then resized to ``out_hw`` (bilinear) if given —
    the way to draw a 126×126 or 31×31 map over an image of its own size. Introduced in notebook 06.
    """
    squeeze = patch_map.dim() == 2
    x = patch_map.reshape(1, 1, *patch_map.shape) if squeeze else patch_map
    x = x.to(torch.float32)
    k, s = geometry.receptive_field, geometry.stride
    ones = torch.ones_like(x)
    # Transposed conv with a k×k box of ones spreads each patch value over its receptive field.
    box = torch.ones(1, 1, k, k, dtype=x.dtype, device=x.device)
    total = torch.nn.functional.conv_transpose2d(x, box, stride=s)
    count = torch.nn.functional.conv_transpose2d(ones, box, stride=s)
    # The transposed conv output starts at input coordinate `offset`; crop or pad to [0, input_size).
    start = geometry.offset
    full = total.shape[-1]
    lo = max(0, -start)
    hi = min(full, input_size - start)
    total = total[..., lo:hi, lo:hi]
    count = count[..., lo:hi, lo:hi]
    pad_before = max(0, start)
    pad_after = input_size - pad_before - total.shape[-1]
    pad = (pad_before, pad_after, pad_before, pad_after)
    total = torch.nn.functional.pad(total, pad, mode="replicate")
    count = torch.nn.functional.pad(count, pad, mode="replicate")
    out = total / count.clamp_min(1e-12)
    if out_hw is not None and tuple(out_hw) != (input_size, input_size):
        out = torch.nn.functional.interpolate(out, size=tuple(out_hw), mode="bilinear", align_corners=False)
    return out[0, 0] if squeeze else out
