"""JSON the project writes: undefined metrics as null, paths as strings."""

import json
import math
from pathlib import Path

from ladeda_lib.jsonio import json_safe, write_json


def test_json_safe_and_write_json(tmp_path):
    value = {"ap": math.nan, "inf": -math.inf, 3: (1.5, Path("a/b")), "nested": [{"x": math.inf}]}
    assert json_safe(value) == {"ap": None, "inf": None, "3": [1.5, "a/b"], "nested": [{"x": None}]}
    path = write_json(tmp_path / "sub" / "m.json", value)
    text = path.read_text()
    assert text.endswith("\n") and "NaN" not in text and json.loads(text)["3"] == [1.5, "a/b"]
