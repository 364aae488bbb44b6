"""Model files written by an older gtcompress are served as that version served them.

Metadata keeps its meaning across versions: where an older writer recorded a value the current one
writes differently (a TEDDY threshold of -Infinity/Infinity, now the finite constants of the same
rule), the reader maps it rather than refusing a model users already deploy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.errors import SessionError
from runtime.session import GraphSession


@pytest.mark.parametrize(("written", "read"), [("-Infinity", 0.0), ("Infinity", 2.0)])
def test_an_older_infinite_teddy_threshold_is_served(tmp_path: Path, exported, written: str, read: float) -> None:
    """A model gtc sparsify --global and gtc export made before the finite constants carries a threshold
    of -Infinity (keep every edge) or Infinity (drop every non-loop edge) in its metadata; the old runtime
    served it, this one refused it ("'threshold' must be a number, got -inf"). It now reads the finite
    constant of the same rule and answers as a model recorded with that constant."""
    from runtime.spec import teddy_config

    src = onnx.load(str(exported["node"].path))
    models = {}
    for name, threshold in (("old", written), ("new", json.dumps(read))):
        proto = onnx.ModelProto()
        proto.CopyFrom(src)
        entry = proto.metadata_props.add(key="teddy")
        entry.value = f'{{"edges": 0.001, "per_graph": false, "threshold": {threshold}}}'
        onnx.save(proto, str(tmp_path / f"{name}.onnx"))
        models[name] = GraphSession(tmp_path / f"{name}.onnx")
    assert models["old"].model.teddy is not None and models["old"].model.teddy.threshold == read
    rng = np.random.default_rng(0)
    ei = rng.integers(0, 12, (2, 30)).astype(np.int64)
    x = rng.integers(0, 3, (12, 2)).astype(np.int64)
    g = {"x": x, "edge_index": ei, "edge_attr": rng.random((30, 2), np.float32)}
    np.testing.assert_array_equal(models["old"].run([g])[0], models["new"].run([g])[0])
    with pytest.raises(SessionError, match="'threshold' must be a number, got nan"):
        teddy_config({"teddy": '{"edges": 0.3, "per_graph": false, "threshold": NaN}'})
