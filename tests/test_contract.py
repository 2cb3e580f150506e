"""The export contract: the sidecar states architecture, config and geometry; the decision record; sigmoid."""

import json

import numpy as np
import pytest

from ladeda_lib.contract import (
    DecisionCalibration,
    ModelFileError,
    describe_model,
    geometry_from_dict,
    geometry_to_dict,
    model_kind,
    read_sidecar,
    sidecar_geometry,
    sigmoid,
    write_sidecar,
)
from ladeda_lib.models import LaDeDa, TinyLaDeDa


@pytest.mark.parametrize("model", [TinyLaDeDa(), TinyLaDeDa(preprocess="raw"), LaDeDa(width=2)])
def test_geometry_survives_the_sidecar(model, tmp_path):
    assert geometry_from_dict(json.loads(json.dumps(geometry_to_dict(model.geometry())))) == model.geometry()
    path = tmp_path / "m.onnx"
    write_sidecar(path, describe_model(model, DecisionCalibration(1.0, 2.0)))
    record = read_sidecar(path)
    assert record["arch"] == model.arch and record["config"] == json.loads(json.dumps(model.config()))
    assert sidecar_geometry(record) == model.geometry() and record["input_size"] == 256
    assert DecisionCalibration.from_dict(record["calibration"]) == DecisionCalibration(1.0, 2.0)


def test_an_older_sidecar_without_geometry_is_read_from_its_architecture():
    raw = TinyLaDeDa(preprocess="raw")
    assert sidecar_geometry({"arch": "TinyLaDeDa", "config": raw.config()}) == raw.geometry()
    assert sidecar_geometry(None) is None and sidecar_geometry({}) is None


def test_model_kind_decision_record_and_sigmoid():
    assert model_kind("a.PTH") == "checkpoint" and model_kind("b.TFLite") == "tflite"
    with pytest.raises(ModelFileError, match="unknown model file type"):
        model_kind("c.h5")
    with pytest.raises(ValueError, match="positive temperature"):
        DecisionCalibration(0.0, 0.0)
    assert DecisionCalibration(3.0, 2.0).apply(np.array([5.0])) == pytest.approx([1.0])
    assert sigmoid(0.0) == 0.5 and sigmoid(np.array([-1e6, 1e6])).tolist() == pytest.approx([0.0, 1.0])
