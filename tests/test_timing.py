"""The thread policy, the device resolver and the latency rule."""

import pytest
import torch

from ladeda_lib.timing import measure_latency_ms, quietest_block_median, resolve_device, resolve_threads


def test_thread_policy_and_latency_rule():
    assert resolve_threads(3) == 3 and resolve_threads(None) == torch.get_num_threads()
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)
    # a burst of load in one block does not move the result: the quietest block's median is taken
    assert quietest_block_median([1.0, 1.1, 0.9, 9.0, 9.5, 8.0, 1.0, 1.2, 1.1]) == pytest.approx(1.0)
    calls = []
    assert measure_latency_ms(lambda: calls.append(1), runs=6, warmup=2) >= 0 and len(calls) == 8


def test_resolve_device_names_what_is_missing():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda, mps"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
