"""Concurrency stress: many Python threads share read-only inputs and each writes its own outputs; every result
must be bit-identical to the serial one, and the inputs unchanged.

The kernels run without the GIL, and calls of 2**17+ elements go to csoftmax's thread pool (one job at a time:
a call arriving while the pool is busy runs on its own thread), so this exercises true parallelism of the kernels,
the pool's hand-over between Python threads, and the fallback. Also: results do not depend on the pool's thread
count, and a forked child (after the pool has started) computes correctly.
"""
import os
import random
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import csoftmax

THREADS = 16


def _readonly(a):
    a.flags.writeable = False
    return a


def _workload():
    """(label, input, kwargs) covering every path, small and large (pool) sizes, all inputs read-only."""
    rng = np.random.default_rng(11)
    big32 = (rng.standard_normal((512, 1024)) * 5).astype(np.float32)
    big64 = rng.standard_normal((256, 1024)) * 30
    items = [
        ("rows f32 big", _readonly(big32), dict(dim=1)),
        ("lanes f32 big", _readonly(big32.copy()), dict(dim=0)),
        ("rows f64 big", _readonly(big64), dict(dim=-1)),
        ("lanes f64 big", _readonly(big64.copy()), dict(dim=0)),
        ("long row f32", _readonly(rng.standard_normal((1, 600_000)).astype(np.float32)), dict(dim=1)),
        ("long rows f64", _readonly(rng.standard_normal((3, 300_000))), dict(dim=1)),
        ("short rows f32", _readonly(rng.standard_normal((40_000, 7)).astype(np.float32)), dict(dim=1)),
        ("short rows f64", _readonly(rng.standard_normal((30_000, 5))), dict(dim=-1)),
        ("f16 big", _readonly(big32.astype(np.float16)), dict(dim=1)),
        ("f16 dim 0", _readonly(big32[:128].astype(np.float16)), dict(dim=0)),
        ("byte-swapped", _readonly(big64[:64].astype(">f8")), dict(dim=1)),
        ("strided", _readonly(big32.copy())[::2, ::-3], dict(dim=1)),
        ("F order", _readonly(np.asfortranarray(big64[:100])), dict(dim=1)),
        ("3-d", _readonly(rng.standard_normal((20, 30, 40)).astype(np.float32)), dict(dim=1)),
        ("widening dtype=", _readonly(big32[:100].copy()), dict(dim=1, dtype=np.float64)),
        ("broadcast", np.broadcast_to(big32[:1], (300, 1024)), dict(dim=1)),
        ("specials", _readonly(np.array([[0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 1.0, 2.0],
                                         [-np.inf, 0.0, 3e38]] * 50, np.float32)), dict(dim=1)),
        ("small f64", _readonly(np.array([1.0, 2.0, 3.0])), dict(dim=0)),
        ("small f32 2-d", _readonly(rng.standard_normal((4, 6)).astype(np.float32)), dict(dim=0)),
        ("0-d", _readonly(np.array(1.5)), dict(dim=0)),
        ("axis=", _readonly(rng.standard_normal((5, 9))), dict(axis=0)),
        ("list", [[1.0, 2.0, 3.0], [0.5, 0.25, -1.0]], dict(dim=1)),
    ]
    items += [
        ("log_softmax rows", items[0][1], dict(dim=1, func="log_softmax")),
        ("log_softmax lanes", items[3][1], dict(dim=0, func="log_softmax")),
        ("log_softmax long row", items[4][1], dict(dim=1, func="log_softmax")),
        ("softmin f16", items[8][1], dict(dim=1, func="softmin")),
        ("softmin short rows", items[6][1], dict(dim=1, func="softmin")),
        ("tuple dim", items[13][1], dict(dim=(0, 2))),
        ("where=", items[0][1], dict(dim=1, where=_readonly(rng.random(items[0][1].shape) < 0.8))),
    ]
    return items


def _call(x, kwargs, out=None):
    kwargs = dict(kwargs)
    f = getattr(csoftmax, kwargs.pop("func", "softmax"))
    if out is not None:
        kwargs["out"] = out
    dim = kwargs.pop("dim", None)
    if dim is None:
        return f(x, **kwargs)
    return f(x, dim, **kwargs)


def _bits(y):
    y = np.ascontiguousarray(y)
    return y.dtype.str, y.shape, y.tobytes()


def _snap(x):
    if isinstance(x, np.ndarray):
        root = x
        while isinstance(root.base, np.ndarray):
            root = root.base
        return root.tobytes(), x.strides, x.flags.writeable
    return repr(x)


@pytest.fixture
def fine_switching():
    """Switch Python threads as often as possible, so calls interleave at every bytecode boundary."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _run_threads(n_threads, target):
    errors = []
    barrier = threading.Barrier(n_threads)

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} threads still running after 600 s (deadlock?)"
    return errors


def test_many_threads_sharing_read_only_inputs_get_the_serial_bits(fine_switching):
    work = _workload()
    serial = [_bits(_call(x, kw)) for _, x, kw in work]
    before = [_snap(x) for _, x, _ in work]
    rounds = 20
    mismatches = []
    counts = [0] * THREADS

    def target(i):
        rnd = random.Random(i)
        order = list(range(len(work))) * rounds
        rnd.shuffle(order)
        for j in order:
            label, x, kw = work[j]
            got = _bits(_call(x, kw))
            counts[i] += 1
            if got != serial[j]:
                mismatches.append((i, label))

    t0 = time.perf_counter()
    errors = _run_threads(THREADS, target)
    elapsed = time.perf_counter() - t0
    assert not errors, f"exceptions in threads: {errors[:5]}"
    assert not mismatches, f"results differing from the serial ones (thread, case): {sorted(set(mismatches))[:10]}"
    assert sum(counts) == THREADS * rounds * len(work)
    assert [_snap(x) for _, x, _ in work] == before, "an input changed"
    print(f"{sum(counts)} calls in {THREADS} threads, {elapsed:.1f} s")


def test_threads_writing_into_their_own_out_arrays(fine_switching):
    """Each thread owns preallocated out= arrays (plain, strided, byte-swapped) that it reuses for every call."""
    work = [w for w in _workload() if isinstance(w[1], np.ndarray)]
    serial = [_bits(_call(x, kw)) for _, x, kw in work]
    bad = []

    def make_out(y, style):
        if style == 0:
            return np.empty_like(y)
        if style == 1 and y.ndim:
            return np.empty(tuple(2 * n for n in y.shape), y.dtype)[tuple(slice(None, None, 2) for _ in y.shape)]
        return np.empty(y.shape, y.dtype.newbyteorder("S"))

    def target(i):
        outs = [make_out(_call(x, kw), i % 3) for _, x, kw in work]
        rnd = random.Random(200 + i)
        order = list(range(len(work))) * 8
        rnd.shuffle(order)
        for j in order:
            label, x, kw = work[j]
            r = _call(x, kw, out=outs[j])
            if r is not outs[j] or _bits(np.asarray(r, dtype=r.dtype.newbyteorder("="))) != serial[j]:
                bad.append((i % 3, label))

    errors = _run_threads(THREADS, target)
    assert not errors, errors[:5]
    assert not bad, f"(out style, case) differing from the serial result: {sorted(set(bad))[:10]}"


def test_threads_writing_many_fresh_outputs_from_one_shared_view(fine_switching):
    """All threads reduce the same read-only strided view along different dims at once; every output is its own."""
    rng = np.random.default_rng(12)
    base = _readonly((rng.standard_normal((64, 96, 80)) * 4).astype(np.float32))
    views = [base, base[:, ::-1, :], base.transpose(2, 0, 1), base[::2, ::3, 1::2]]
    serial = {(v, d): _bits(csoftmax.softmax(views[v], d)) for v in range(len(views)) for d in range(3)}
    keys = list(serial)
    bad = []

    def target(i):
        rnd = random.Random(100 + i)
        for _ in range(150):
            v, d = keys[rnd.randrange(len(keys))]
            y = csoftmax.softmax(views[v], d)
            if _bits(y) != serial[(v, d)]:
                bad.append((v, d))

    errors = _run_threads(THREADS, target)
    assert not errors, errors[:5]
    assert not bad, f"differences for (view, dim): {sorted(set(bad))}"


def test_results_do_not_depend_on_the_pool_thread_count():
    get, set_ = csoftmax.get_num_threads, csoftmax.set_num_threads
    work = [w for w in _workload() if isinstance(w[1], np.ndarray) and w[1].size >= 1 << 17]
    original = get()
    try:
        set_(1)
        serial = [_bits(_call(x, kw)) for _, x, kw in work]
        for n in (2, 3, 7, 32):
            set_(n)
            for (label, x, kw), expect in zip(work, serial):
                assert _bits(_call(x, kw)) == expect, f"{label}: different bits with {n} threads than with 1"
    finally:
        set_(original)


def test_pool_thread_count_changes_while_other_threads_compute(fine_switching):
    """set_num_threads from one thread while others compute: no crash, no deadlock, same bits."""
    get, set_ = csoftmax.get_num_threads, csoftmax.set_num_threads
    work = [w for w in _workload() if isinstance(w[1], np.ndarray) and w[1].size >= 1 << 17]
    serial = [_bits(_call(x, kw)) for _, x, kw in work]
    original = get()
    stop = threading.Event()
    bad = []

    def target(i):
        if i == 0:
            rnd = random.Random(0)
            while not stop.is_set():
                set_(rnd.choice((1, 2, 3, 5, 8)))
                time.sleep(0.001)
            return
        for _ in range(20):
            for (label, x, kw), expect in zip(work, serial):
                if _bits(_call(x, kw)) != expect:
                    bad.append(label)
        if i == 1:
            stop.set()

    try:
        errors = _run_threads(6, target)
    finally:
        stop.set()
        set_(original)
    assert not errors, errors[:5]
    assert not bad, sorted(set(bad))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_computes_correctly_after_the_pool_started():
    """threads.h: after fork() the child has none of the parent's worker threads; it must create its own (or run
    inline) rather than wait forever for workers that do not exist."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((512, 2048)).astype(np.float32)
    expect = _bits(csoftmax.softmax(x, 1))      # starts the pool in the parent
    busy = threading.Thread(target=lambda: [csoftmax.softmax(x, 0) for _ in range(20)])
    busy.start()                                # the pool may be mid-job at the fork
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # Python 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:                                # child: no pytest machinery, just an exit status
        code = 1
        try:
            ok = all(_bits(csoftmax.softmax(x, 1)) == expect for _ in range(3))
            code = 0 if ok else 3
        finally:
            os._exit(code)
    busy.join()
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish within 120 s (deadlocked on the parent's pool?)")
        time.sleep(0.05)
    assert os.WIFEXITED(status), f"child died: status {status}"
    assert os.WEXITSTATUS(status) == 0, f"child computed wrong results (exit {os.WEXITSTATUS(status)})"
