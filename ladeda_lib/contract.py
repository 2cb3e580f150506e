"""The export contract: what an exported file is called inside, what its sidecar says, and the decision record.

Every exported graph has the input :data:`INPUT_NAME` (normalised float images) or :data:`PIXEL_INPUT_NAME`
(``pixel − 128``, the full-int8 student) and the outputs :data:`LOGIT_NAME` and, optionally, :data:`PATCH_NAME`.
Next to each file the export writes ``<file>.ladeda.json`` (:func:`write_sidecar`): its architecture, config,
patch geometry, input size and decision calibration, so that a loader reads what the file is instead of
guessing it (:func:`sidecar_geometry`).

* :class:`DecisionCalibration` is the *decision* calibration: an offset and a temperature fitted on labelled
  images (``ladeda calibrate``), ``calibrated = (logit − offset) / temperature``. (The int8 file's
  *representative images* and the student's *fc-bias offset* fitted after training are other ideas with other
  names.)
* :func:`sigmoid` turns a logit into p(fake), the one formula every report uses.

Introduced in notebooks 06 and 08.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.geometry import INPUT_GEOMETRY, LayerSpec, PatchGeometry
from ladeda_lib.jsonio import write_json

#: Names of an exported graph's input and outputs — the contract every runner and converter relies on.
INPUT_NAME = "input"
LOGIT_NAME = "logit"
PATCH_NAME = "patch_logits"
#: Input name of a *pixel-input* graph (the full-int8 student, :mod:`ladeda_lib.graphs.pixel_input`): it takes
#: ``pixel − 128`` (0..255 grey levels shifted into int8's [-128, 127]) instead of normalised floats, so its
#: int8 input step is exactly one grey level. Predictors recognise such a file by this input name.
PIXEL_INPUT_NAME = "pixels"
#: Suffixes of the formats a model file may have (compared lower-case).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
EXPORT_SUFFIXES = (".onnx", ".tflite")
#: The record written next to each exported file: what it is and how it is calibrated.
SIDECAR_SUFFIX = ".ladeda.json"


class ModelFileError(ValueError):
    """A model file that cannot be run as given (wrong type, shape, layout); the message says what to do."""


def model_kind(path: str | Path) -> str:
    """``"checkpoint"``, ``"onnx"`` or ``"tflite"`` by suffix (case-insensitive); :class:`ModelFileError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in EXPORT_SUFFIXES:
        return suffix[1:]
    known = ", ".join(CHECKPOINT_SUFFIXES + EXPORT_SUFFIXES)
    raise ModelFileError(f"{path}: unknown model file type {Path(path).suffix!r}; expected one of {known}")


def sigmoid(logits: Any) -> np.ndarray:
    """p(fake) of logits of any shape, float64 numpy; clipped to ±80 so that huge logits give 0 or 1 silently."""
    z = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -80.0, 80.0)))


# ----------------------------------------------------------------------------------------------------
# The decision calibration: an offset and a temperature
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionCalibration:
    """``calibrated logit = (logit − offset) / temperature`` (``temperature > 0``; the ranking is unchanged).

    ``fitted_on`` records the data (root, split, image count, class counts, metrics before/after).
    Stored under the key ``"calibration"`` of checkpoint metadata and sidecars. Works behind notebook 06.
    """

    offset: float = 0.0
    temperature: float = 1.0
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature) and math.isfinite(self.offset)):
            raise ValueError(f"calibration needs a finite offset and a positive temperature, got {self}")

    def apply(self, logits: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Any shape of raw logits (image or patch) → calibrated logits, same shape and type."""
        return (logits - self.offset) / self.temperature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> DecisionCalibration | None:
        if not record:
            return None
        return cls(float(record["offset"]), float(record["temperature"]), dict(record.get("fitted_on", {})))


NO_CALIBRATION_NOTE = (
    "this model carries no calibration record: its probabilities are the raw sigmoid of its logits, and a "
    "published checkpoint's threshold may be meaningless on your images (the ForenSynth student calls every "
    "photograph fake). Fit one with `ladeda calibrate --model M --data D`."
)


# ----------------------------------------------------------------------------------------------------
# The sidecar: the file describes itself
# ----------------------------------------------------------------------------------------------------
def sidecar_path(path: str | Path) -> Path:
    """``<file>.ladeda.json`` next to ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The ``<file>.ladeda.json`` record written by the export next to ``path``, or None."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    return json.loads(sidecar.read_text())


def write_sidecar(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (see :func:`describe_model`) to ``<file>.ladeda.json``; returns its path."""
    return write_json(sidecar_path(path), record)


def geometry_to_dict(geometry: PatchGeometry) -> dict[str, Any]:
    """A :class:`~ladeda_lib.geometry.PatchGeometry` as plain JSON data (its layers included)."""
    return {
        "receptive_field": geometry.receptive_field,
        "stride": geometry.stride,
        "offset": geometry.offset,
        "layers": [asdict(layer) for layer in geometry.layers],
    }


def geometry_from_dict(record: dict[str, Any]) -> PatchGeometry:
    """Inverse of :func:`geometry_to_dict`."""
    layers = tuple(LayerSpec(**layer) for layer in record.get("layers", ()))
    return PatchGeometry(int(record["receptive_field"]), int(record["stride"]), int(record["offset"]), layers)


def describe_model(
    model: Any,
    calibration: DecisionCalibration | None = None,
    image_size: int = INPUT_GEOMETRY.image_size,
) -> dict[str, Any]:
    """The facts a sidecar records about the model a file was exported from: ``arch``, ``config``,
    ``geometry`` (:func:`geometry_to_dict`), ``input_size`` and the decision ``calibration`` (or None)."""
    return {
        "arch": model.arch,
        "config": model.config(),
        "geometry": geometry_to_dict(model.geometry()),
        "input_size": int(image_size),
        "calibration": None if calibration is None else calibration.to_dict(),
    }


def sidecar_geometry(record: dict[str, Any] | None) -> PatchGeometry | None:
    """The patch geometry a sidecar states: its ``geometry`` entry, or — for files exported before the entry
    existed — the geometry of the architecture and config it records; None without a sidecar."""
    if not record:
        return None
    if record.get("geometry"):
        return geometry_from_dict(record["geometry"])
    if record.get("arch"):
        from ladeda_lib.checkpoints import build_model

        return build_model(record["arch"], record.get("config")).geometry()
    return None
