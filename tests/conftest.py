"""Shared fixtures: the kernel-set parametrisation and the hostile array generator."""
import numpy as np
import pytest

import csoftmax
from csoftmax import _core

from _helpers import LAYOUTS, make_layout

KERNEL_SETS = _core.available_kernels()


@pytest.fixture(params=KERNEL_SETS)
def kernel_set(request):
    """Runs the test once per kernel set this CPU has, with that set active; restores the previous one."""
    before = _core.active_kernels()
    _core.use_kernels(request.param)
    try:
        assert _core.active_kernels() == request.param
        yield request.param
    finally:
        _core.use_kernels(before)


@pytest.fixture(autouse=True)
def _active_kernel_set_is_restored():
    """No test may leave a different kernel set active for the tests after it."""
    before = _core.active_kernels()
    yield
    after = _core.active_kernels()
    if after != before:
        _core.use_kernels(before)
        pytest.fail(f"the active kernel set changed from {before!r} to {after!r} during the test")


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, but different for every test."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=LAYOUTS)
def hostile(request):
    """(layout name, function base -> array with that memory layout)."""
    name = request.param
    return name, lambda base: make_layout(base, name)


@pytest.fixture
def hostile_arrays():
    """All hostile layouts of one base array: {name: array}."""
    return lambda base: {name: make_layout(base, name) for name in LAYOUTS}


def pytest_report_header(config):
    return f"csoftmax {csoftmax.__version__} from {csoftmax.__file__}; kernel sets {KERNEL_SETS}"
