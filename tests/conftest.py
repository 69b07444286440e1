"""Shared fixtures: the kernel-set parametrisation and the hostile array generator."""
import warnings

import numpy as np
import pytest

# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching (libcst -> mypy_extensions),
# which emits a DeprecationWarning; under filterwarnings=error that turns the failure report into an INTERNALERROR.
# Import it once here, with warnings silenced, so failures are reported normally.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except Exception:  # pragma: no cover - optional, private module
        pass

import csoftmax
from csoftmax import _csoftmax

from _helpers import LAYOUTS, make_layout

KERNEL_SETS = _csoftmax.available_kernels()


@pytest.fixture(params=KERNEL_SETS)
def kernel_set(request):
    """Runs the test once per kernel set this CPU has, with that set active; restores the previous one."""
    before = _csoftmax.active_kernels()
    _csoftmax.use_kernels(request.param)
    try:
        assert _csoftmax.active_kernels() == request.param
        yield request.param
    finally:
        _csoftmax.use_kernels(before)


@pytest.fixture(autouse=True)
def _active_kernel_set_is_restored():
    """No test may leave a different kernel set active for the tests after it."""
    before = _csoftmax.active_kernels()
    yield
    after = _csoftmax.active_kernels()
    if after != before:
        _csoftmax.use_kernels(before)
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


def pytest_terminal_summary(terminalreporter):
    """Prints the accuracy figures that test_accuracy.py measured (for the header of csoftmax/src/kernels.inc)."""
    from _helpers import MEASURED

    if MEASURED:
        terminalreporter.section("csoftmax measured accuracy")
        for key in sorted(MEASURED):
            terminalreporter.write_line(f"{key}: {MEASURED[key]}")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the long tests marked slow (huge arrays, a million-call leak check, fuzzing)")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow skip unless --slow is given or an -m expression selects by marker itself."""
    if config.getoption("--slow") or config.option.markexpr:
        return
    skip = pytest.mark.skip(reason="long test: python -m pytest --slow runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"csoftmax {csoftmax.__version__} from {csoftmax.__file__}; kernel sets {KERNEL_SETS}"
