"""Fuzzing in the test suite: a time-bounded hypothesis run of the harness, and a replay of every saved case.

CSOFTMAX_FUZZ_SECONDS (default 20) bounds the run; CSOFTMAX_FUZZ_SEED fixes its seed (default: a new one each run,
printed on failure). Failing cases are saved into tests/fuzz/corpus/ (or CSOFTMAX_FUZZ_CORPUS) so that
test_corpus_case replays them from then on. The CI command is `python tests/fuzz/run_fuzz.py --seconds 60`.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_harness as fh  # noqa: E402

SECONDS = float(os.environ.get("CSOFTMAX_FUZZ_SECONDS", "20"))


@pytest.mark.slow
def test_fuzz_for_a_bounded_time(request):
    seed = int(os.environ.get("CSOFTMAX_FUZZ_SEED", "0")) or int.from_bytes(os.urandom(3), "little") + 1
    saved = []

    def on_failure(case, err):
        saved.append((err, fh.save_case(case, err.kind), fh.describe(case)))

    count, failures = fh.hypothesis_engine(SECONDS, on_failure, seed=seed, max_failures=3)
    text = f"[fuzz] {count} inputs in {SECONDS:g} s (seed {seed}), {len(failures)} failure(s)"
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + text)
    else:
        print(text)
    assert count > 0
    if saved:
        lines = [f"{err}\n    saved as {path}\n    case {desc}" for err, path, desc in saved]
        pytest.fail(f"fuzzing (seed {seed}) found {len(saved)} failure(s):\n" + "\n".join(lines), pytrace=False)


@pytest.mark.parametrize("path", fh.corpus_files(), ids=os.path.basename)
def test_corpus_case(path):
    """Every saved failure (and the hand-written seeds) must pass now."""
    fh.check_case(fh.load_case(path))


def test_the_harness_detects_broken_results(monkeypatch):
    """The checks can fail: a softmax that is off by a few ulp, that returns the wrong dtype, that writes into its
    input, or that depends on the layout is caught."""
    import csoftmax

    case = fh.build_case(fh.BytesDraw(b""))
    case.update(shape=[3, 5], strides=[40, 8], offset=0, dtype="<f8", dim=1, dim_kind="int", dtype_arg=None,
                input_kind="array", kernels=None, readonly=False, func="softmax", out_kind=None, where_seed=None,
                where_p=None,
                buffer=np.linspace(-2.0, 2.0, 15).astype("<f8").tobytes())
    fh.check_case(case)
    real = csoftmax.softmax

    def off_by_ulps(x, dim=None, dtype=None, *, axis=None):
        y = real(x, dim, dtype, axis=axis)
        return y * (1 + 100 * np.finfo(y.dtype).eps)

    def wrong_dtype(x, dim=None, dtype=None, *, axis=None):
        return real(x, dim, dtype, axis=axis).astype(np.float32)

    def writes_input(x, dim=None, dtype=None, *, axis=None):
        y = real(x, dim, dtype, axis=axis)
        if isinstance(x, np.ndarray) and x.flags.writeable:
            x.flat[0] = 0.0
        return y

    def layout_dependent(x, dim=None, dtype=None, *, axis=None):
        y = real(x, dim, dtype, axis=axis)
        if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
            y = np.nextafter(y, 0)
        return y

    for fake, kind in ((off_by_ulps, "ulp-softmax-f8"), (wrong_dtype, "dtype"), (writes_input, "input-modified")):
        monkeypatch.setattr(csoftmax, "softmax", fake)
        with pytest.raises(fh.FuzzFailure) as info:
            fh.check_case(case)
        assert info.value.kind == kind, info.value
    monkeypatch.setattr(csoftmax, "softmax", layout_dependent)
    strided = dict(case, strides=[48, 8], buffer=np.linspace(-2.0, 2.0, 18).astype("<f8").tobytes())
    with pytest.raises(fh.FuzzFailure) as info:
        fh.check_case(strided)
    assert info.value.kind in ("layout-bits", "ulp-softmax-f8"), info.value


def test_decoder_accepts_any_bytes():
    """Every byte string (empty, short, long, random) decodes to a valid case."""
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 5, 17, 64, 255, 1000):
        for _ in range(20):
            case = fh.build_case(fh.BytesDraw(rng.bytes(n)))
            x = fh.materialize(case)
            assert x.shape == tuple(case["shape"])
