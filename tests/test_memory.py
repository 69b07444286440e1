"""softmax never copies its input: the only array it allocates (as tracemalloc sees NumPy's allocations) is the
output, for contiguous, transposed, strided and reversed inputs and every dim. The kernels' own scratch (per-lane
state, one row buffer per task) is bounded and small, independent of the array."""
import tracemalloc

import numpy as np
import pytest

import csoftmax


@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "reversed", "byte-swapped"])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmin"])
def test_a_large_call_allocates_only_its_output(layout, dim, fn):
    x = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)   # 16 MiB
    view = {"C": x, "F": np.asfortranarray(x), "strided": x[:, ::2], "transposed": x.T, "reversed": x[::-1],
            "byte-swapped": x.astype(">f4")}[layout]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = getattr(csoftmax, fn)(view, dim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= y.nbytes + 64 * 1024, f"peak {peak} bytes for an output of {y.nbytes}"
