#!/usr/bin/env python
"""Side-by-side timing of csoftmax against its peers and against memory-bound floors.

Run from the repository root::

    python benchmarks/compare.py             # full run, 1-3 minutes (a ~10 s budget per case)
    python benchmarks/compare.py --quick     # fewer repeats, under a minute (a ~3 s budget per case)
    python benchmarks/compare.py --cases f16 dim0 --kernels baseline

For every case (shape, dtype, dim, layout) it times, INTERLEAVED: one sample of every implementation per
round, the order shuffled each round, rounds repeated until the case's time budget is spent, then the median
per implementation. A noisy neighbour on this shared machine therefore slows all implementations of a round
alike instead of ruining one column, and the median discards the rounds it hit hardest.

Implementations (columns):
  csoftmax       csoftmax.softmax(x, dim), the kernel set named at the top (single-threaded)
  torch 1t       torch.softmax(t, dim) with torch.set_num_threads(1) - the like-for-like comparison
  torch Nt       the same with torch's default thread count (all cores)
  scipy          scipy.special.softmax(x, axis=dim)
  numpy          the three-line NumPy softmax (x - max, exp, / sum, keepdims)
  x.copy()       floor: allocate + copy the input (what any out-of-place op must at least do)
  copyto         floor: np.copyto(out, x) into a preallocated out (pure memory traffic, no allocation)
  np.exp         floor of the tiny (3,) case only: np.exp(x), the cost of one ufunc call

Peers that are not installed are skipped with a note. The table ends with the ratios the issue sets targets
for: torch(1 thread)/csoftmax (a speedup: higher is better) and csoftmax/floor (lower is better).
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

# `python benchmarks/compare.py` puts benchmarks/ (not the repository root) first on sys.path. Put the root
# there so `import csoftmax` finds the source folder: csoftmax/__init__.py uses an in-place build
# (`python setup.py build_ext --inplace`) when there is one, and otherwise hands over to a pip-installed copy.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

try:
    import csoftmax
    from csoftmax import _core as cs_core
    from csoftmax._config import config as cs_config
except ImportError as exc:  # no in-place build and nothing installed: nothing to benchmark
    sys.exit(f"cannot import csoftmax: {exc}")

# Optional peers: each one missing only removes its column.
NOTES: list[str] = []
try:
    import torch

    # Read the default before anything changes it: "all threads" means what torch would use on its own.
    TORCH_ALL_THREADS = torch.get_num_threads()
except ImportError:
    torch = None
    TORCH_ALL_THREADS = 0
    NOTES.append("torch is not installed: the torch columns are skipped")
try:
    import scipy
    import scipy.special
except ImportError:
    scipy = None
    NOTES.append("scipy is not installed: the scipy column is skipped")


# --------------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: Callable[[np.random.Generator], np.ndarray]  # builds the input (may be a strided view)
    dim: int
    floor: str = "x.copy()"  # which implementation the "cs/floor" ratio divides by
    floor_target: Optional[float] = None  # the target: csoftmax / floor <= this (None: no target)
    torch_target: Optional[float] = None  # the target: torch(1 thread) / csoftmax >= this


def _randn(shape, dtype):
    """Standard-normal input; generated in float32/float64 directly (fast for 16M elements), then cast."""
    def make(rng):
        gen_dtype = np.float64 if np.dtype(dtype) == np.float64 else np.float32
        return rng.standard_normal(shape, dtype=gen_dtype).astype(dtype, copy=False)

    return make


def _strided_view(rng):
    # Every other column of a C-contiguous (2048, 4096) array: the rows are not contiguous (element stride 8
    # bytes), the case that tests csoftmax's gather path against copying the same view.
    return rng.standard_normal((2048, 4096), dtype=np.float32)[:, ::2]


CASES = [
    Case("(4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=1.5, torch_target=3),
    Case("(4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=2, torch_target=5),
    Case("(32,128,128) dim1", _randn((32, 128, 128), np.float32), 1, floor_target=2, torch_target=5),
    Case("(1e6,10) last", _randn((1_000_000, 10), np.float32), -1, floor_target=2, torch_target=8),
    Case("(8,12,256,256) last", _randn((8, 12, 256, 256), np.float32), -1, floor_target=1.3, torch_target=1.5),
    Case("(64,1000) last", _randn((64, 1000), np.float32), -1, torch_target=3),
    Case("(1e6,) f64", _randn((1_000_000,), np.float64), -1, floor_target=1.5, torch_target=2),
    Case("(4096,1024) f16 last", _randn((4096, 1024), np.float16), -1, torch_target=2),
    # the floor is x.copy() of the *view*, i.e. gathering the same strided elements into a new array
    Case("(2048,4096)[:,::2] last", _strided_view, -1, floor_target=2, torch_target=1.5),
    # 3 elements: all overhead. The comparator is one NumPy ufunc call on the same array.
    Case("(3,) f32", _randn((3,), np.float32), -1, floor="np.exp", floor_target=2, torch_target=3),
]


# --------------------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------------------


def numpy_softmax(x, axis):
    """The three-line softmax most NumPy users write."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class Impl:
    name: str
    fn: Callable[[], object]  # zero-argument call that does exactly the timed work
    before: Optional[Callable[[], None]] = None  # untimed setup before each sample (torch's thread count)
    number: int = 1  # calls per sample, calibrated so one sample is long enough to time
    times: list = field(default_factory=list)  # seconds per call, one entry per round


def _torch_tensor(x: np.ndarray, notes: list):
    """torch.from_numpy, converted once, outside the timing; a contiguous copy only when torch refuses the view
    (e.g. negative strides). A copy changes torch's work (it then reads contiguous memory), so it is noted."""
    try:
        return torch.from_numpy(x)
    except (ValueError, RuntimeError, TypeError):
        notes.append("torch got a contiguous copy of the input (torch.from_numpy refused the view)")
        return torch.from_numpy(np.ascontiguousarray(x))


def build_impls(case: Case, x: np.ndarray, notes: list) -> list[Impl]:
    """The timed callables for one case. functools.partial rather than lambdas where possible: every column
    then pays the same small per-call Python overhead, which matters for the tiny cases."""
    dim = case.dim
    impls = [Impl("csoftmax", functools.partial(csoftmax.softmax, x, dim))]
    if torch is not None:
        t = _torch_tensor(x, notes)
        # The thread count is global to torch, so it is set before every sample, outside the timed region.
        impls.append(Impl("torch 1t", functools.partial(torch.softmax, t, dim),
                          before=functools.partial(torch.set_num_threads, 1)))
        if TORCH_ALL_THREADS > 1:
            impls.append(Impl(f"torch {TORCH_ALL_THREADS}t", functools.partial(torch.softmax, t, dim),
                              before=functools.partial(torch.set_num_threads, TORCH_ALL_THREADS)))
    if scipy is not None:
        impls.append(Impl("scipy", functools.partial(scipy.special.softmax, x, axis=dim)))
    impls.append(Impl("numpy", functools.partial(numpy_softmax, x, dim)))
    impls.append(Impl("x.copy()", x.copy))
    out = np.empty(x.shape, x.dtype)  # allocated once: copyto is the no-allocation floor
    impls.append(Impl("copyto", functools.partial(np.copyto, out, x)))
    if case.floor == "np.exp":
        impls.append(Impl("np.exp", functools.partial(np.exp, x)))
    return impls


# --------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------


def _sample(impl: Impl) -> float:
    """Seconds per call over impl.number back-to-back calls (gc off, as timeit does, so a collection triggered
    by one implementation's garbage is not billed to another)."""
    if impl.before is not None:
        impl.before()
    fn = impl.fn
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(impl.number):
            fn()
        elapsed = time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / impl.number


def _calibrate(impl: Impl, min_sample: float) -> None:
    """Warm up once, then double the calls per sample until a sample lasts min_sample seconds: short calls are
    timed in a loop so perf_counter's resolution and the loop's own cost stay negligible."""
    if impl.before is not None:
        impl.before()
    impl.fn()  # warm-up: first-call costs (lazy imports, page faults, torch's thread pool) are not timed
    impl.number = 1
    while True:
        per_call = _sample(impl)
        if per_call * impl.number >= min_sample or impl.number >= 1 << 20:
            return
        # jump close to the target instead of doubling many times when a call is very short
        impl.number = max(impl.number * 2, min(1 << 20, int(min_sample / max(per_call, 1e-9) * 1.2)))


def time_case(impls: list[Impl], budget: float, min_rounds: int, max_rounds: int, min_sample: float,
              rng: random.Random, notes: list) -> int:
    """Round-robin timing: each round takes one sample of every implementation in a shuffled order. Stops
    when the case has used its budget (and has min_rounds), or at max_rounds. Returns the rounds run.
    An implementation that raises (e.g. a peer that rejects a dtype) is dropped from the case with a note."""
    for impl in impls[:]:
        try:
            _calibrate(impl, min_sample)
        except Exception as exc:
            notes.append(f"{impl.name} skipped: {type(exc).__name__}: {exc}")
            impls.remove(impl)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        order = impls[:]
        rng.shuffle(order)  # no implementation always runs right after the same other one (caches, clocks)
        for impl in order:
            impl.times.append(_sample(impl))
        rounds += 1
    return rounds


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------


def fmt_time(seconds: Optional[float]) -> str:
    """Three significant digits in the largest unit that keeps the number >= 1 (999.96 us prints as 1 ms)."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if float(f"{seconds / scale:.3g}") >= 1:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(r: Optional[float]) -> str:
    return "-" if r is None else f"{r:.2f}x"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def check_result(case: Case, x: np.ndarray) -> Optional[str]:
    """A benchmark of a wrong answer is worthless (the kernels are being edited concurrently): compare with a
    float64 NumPy reference before timing. Returns a problem description, or None."""
    try:
        got = csoftmax.softmax(x, case.dim)
    except Exception as exc:  # report, don't abort the whole run
        return f"csoftmax raised {type(exc).__name__}: {exc}"
    want = numpy_softmax(x.astype(np.float64), case.dim)
    rtol = 1e-2 if x.dtype == np.float16 else 1e-4
    if got.shape != x.shape or got.dtype != x.dtype:
        return f"csoftmax returned {got.dtype}{got.shape}, expected {x.dtype}{x.shape}"
    if not np.allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * 1e-3):
        return "csoftmax result differs from the NumPy reference"
    return None


def summarize(case: Case, impls: list[Impl]) -> dict:
    med = {i.name: statistics.median(i.times) for i in impls if i.times}
    cs = med.get("csoftmax")
    t1 = med.get("torch 1t")
    tn = med.get(f"torch {TORCH_ALL_THREADS}t")
    floor = med.get(case.floor)
    speedup = t1 / cs if (cs and t1) else None
    speedup_n = tn / cs if (cs and tn) else None
    floor_ratio = cs / floor if (cs and floor) else None

    def check(value, target, higher_is_better):
        if target is None:
            return "-"
        if value is None:
            return "n/a"
        ok = value >= target if higher_is_better else value <= target
        return "met" if ok else "MISSED"

    # spread of csoftmax's samples (interquartile range relative to the median): how much to trust the row
    cs_times = next((i.times for i in impls if i.name == "csoftmax"), [])
    q = statistics.quantiles(cs_times, n=4) if len(cs_times) >= 2 else None
    return {
        "case": case.name,
        "medians": med,
        "rounds": max((len(i.times) for i in impls), default=0),
        "cs_iqr_pct": 100 * (q[2] - q[0]) / cs if (cs and q) else None,
        "speedup_torch1": speedup,
        "speedup_torchN": speedup_n,
        "floor": case.floor,
        "floor_ratio": floor_ratio,
        "floor_target": case.floor_target,
        "torch_target": case.torch_target,
        "floor_check": check(floor_ratio, case.floor_target, False),
        "torch_check": check(speedup, case.torch_target, True),
    }


def print_table(rows: list[dict], columns: list[str]) -> None:
    tn = f"torch {TORCH_ALL_THREADS}t"
    head = (["case"] + columns + ["torch1t/cs (speedup)", f"{tn}/cs" if TORCH_ALL_THREADS > 1 else None,
                                  "cs/floor", "target (floor, torch)", "meets (floor, torch)", "cs IQR"])
    head = [h for h in head if h is not None]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if h == "case" else "--:" for h in head) + "|")
    for r in rows:
        ft = f"<={r['floor_target']:g}x {r['floor']}" if r["floor_target"] is not None else "-"
        tt = f">={r['torch_target']:g}x" if r["torch_target"] is not None else "-"
        cells = [r["case"] + (" **WRONG**" if r.get("problem") else "")]
        cells += [fmt_time(r["medians"].get(c)) for c in columns]
        cells.append(fmt_ratio(r["speedup_torch1"]))
        if TORCH_ALL_THREADS > 1:
            cells.append(fmt_ratio(r["speedup_torchN"]))
        cells.append(fmt_ratio(r["floor_ratio"]) + ("" if r["floor"] == "x.copy()" else f" ({r['floor']})"))
        cells += [f"{ft}, {tt}", f"{r['floor_check']}, {r['torch_check']}",
                  "-" if r["cs_iqr_pct"] is None else f"{r['cs_iqr_pct']:.0f}%"]
        print("| " + " | ".join(cells) + " |")


def write_png(rows: list[dict], path: str, title: str) -> Optional[str]:
    """Two panels: csoftmax/floor (lower is better) and torch(1t)/csoftmax (higher is better), a bar per case,
    green when the issue's target is met, red when missed, grey without a target; the target is a black tick."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # file output only: works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    colour = {"met": "tab:green", "MISSED": "tab:red"}
    names = [r["case"] for r in rows]
    ypos = list(range(len(rows)))[::-1]  # first case at the top
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True)
    panels = [
        (axes[0], "floor_ratio", "floor_target", "floor_check", "csoftmax time / floor time  (lower is better)"),
        (axes[1], "speedup_torch1", "torch_target", "torch_check", "torch(1 thread) time / csoftmax time  "
                                                                     "(higher is better)"),
    ]
    for ax, key, tkey, ckey, label in panels:
        values = [r[key] or 0.0 for r in rows]
        ax.barh(ypos, values, color=[colour.get(r[ckey], "tab:gray") for r in rows])
        for y, r in zip(ypos, rows):
            if r[tkey] is not None:
                ax.plot([r[tkey]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
            if r[key]:
                ax.text(r[key], y, f" {r[key]:.2f}x", va="center", fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))  # legible over a tick
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_xlim(0, max([v for v in values] + [r[tkey] or 0 for r in rows]) * 1.25 or 1)
    axes[0].set_yticks(ypos)
    axes[0].set_yticklabels(names)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (whole run about a minute)")
    # Case names contain commas, so several filters are separate words: --cases f16 dim0
    p.add_argument("--cases", nargs="+", action="extend", default=[], metavar="SUBSTRING",
                   help="only cases whose name contains one of these substrings (case-insensitive, spaces "
                        "ignored), e.g. --cases f16 dim0 '(3,)'")
    p.add_argument("--kernels", help="switch csoftmax to this kernel set first (see csoftmax.show_config())")
    p.add_argument("--png", default=os.path.join(HERE, "compare.png"), help="chart path (default: %(default)s)")
    p.add_argument("--no-png", action="store_true", help="do not write the chart")
    p.add_argument("--json", help="also write the raw per-round times and the summary to this JSON file")
    p.add_argument("--budget", type=float, help="seconds of timing per case (default 10, --quick 3)")
    args = p.parse_args(argv)

    # Time budget per case. Rounds continue until it is spent; min_rounds guarantees a median of several
    # samples even for the slowest case, max_rounds stops the fast cases from collecting needless samples.
    budget = args.budget if args.budget is not None else (3.0 if args.quick else 10.0)
    min_rounds, max_rounds = (5, 50) if args.quick else (7, 200)
    min_sample = 0.5e-3 if args.quick else 1e-3  # a sample of a short call loops for at least this long

    if args.kernels:
        available = cs_core.available_kernels()
        if args.kernels not in available:
            print(f"unknown kernel set {args.kernels!r}; available here: {available}", file=sys.stderr)
            return 2
        cs_core.use_kernels(args.kernels)

    wanted = [s.replace(" ", "").lower() for s in args.cases if s.strip()]
    cases = [c for c in CASES if not wanted or any(w in c.name.replace(" ", "").lower() for w in wanted)]
    if not cases:
        print(f"no case matches --cases {args.cases!r}; cases: {[c.name for c in CASES]}", file=sys.stderr)
        return 2

    cfg = cs_config()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; csoftmax reports: {cfg['cpu']})")
    print(f"csoftmax {cfg['version']} from {os.path.dirname(csoftmax.__file__)}; active kernels: "
          f"{cfg['active']} (available: {', '.join(cfg['available'])})"
          + (f"; forced by CSOFTMAX_ISA={cfg['forced_by']}" if cfg["forced_by"] else ""))
    versions = [f"numpy {np.__version__}", f"python {platform.python_version()}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__} (1 and {TORCH_ALL_THREADS} threads)")
    if scipy is not None:
        versions.append(f"scipy {scipy.__version__}")
    print("; ".join(versions))
    print(f"timing: interleaved rounds, median; {budget:g} s per case, {min_rounds}-{max_rounds} rounds, "
          f"samples >= {min_sample * 1e3:g} ms{' (--quick)' if args.quick else ''}")
    for note in NOTES:
        print(f"note: {note}")
    print(flush=True)  # the header shows before the progress lines (stderr) when both go to one file

    # glibc's malloc serves big blocks with mmap until a freed mmapped block raises its threshold (up to 32 MiB);
    # after that, same-sized blocks are reused from the heap without fresh page faults. Which cases ran first
    # would otherwise decide whether the 16 MiB outputs of a later case pay page faults. Free one ~31 MiB
    # block now, so every run starts in the steady state of a long-running program whatever --cases selects
    # (blocks over 32 MiB, e.g. the 64 MiB (4096,4096) outputs, are mmapped every call, by every peer alike).
    ballast = np.empty(31 << 20, np.uint8)
    del ballast
    np_rng = np.random.default_rng(0)
    order_rng = random.Random(0)
    rows, raw = [], {}
    columns: list[str] = []
    case_notes: list[str] = []
    t_start = time.perf_counter()
    for case in cases:
        x = case.make(np_rng)
        notes: list[str] = []
        problem = check_result(case, x)
        impls = build_impls(case, x, notes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. overflow warnings of the naive float16 NumPy path
            rounds = time_case(impls, budget, min_rounds, max_rounds, min_sample, order_rng, notes)
        row = summarize(case, impls)
        row["problem"] = problem
        rows.append(row)
        raw[case.name] = {i.name: {"number": i.number, "times": i.times} for i in impls}
        for i in impls:
            if i.name not in columns:
                columns.append(i.name)
        for n in notes + ([problem] if problem else []):
            case_notes.append(f"{case.name}: {n}")
        # progress on stderr, so stdout stays a clean report
        print(f"  {case.name}: {rounds} rounds, csoftmax {fmt_time(row['medians'].get('csoftmax'))}", file=sys.stderr,
              flush=True)
        del x, impls  # free the large inputs before the next case allocates its own
    elapsed = time.perf_counter() - t_start

    print_table(rows, columns)
    print()
    print(f"({len(rows)} cases in {elapsed:.0f} s. torch1t/cs: how many times slower single-threaded torch is "
          f"(higher is better for csoftmax); cs/floor: csoftmax time / x.copy() time, or / the case's "
          f"floor in parentheses (lower is better); cs IQR: interquartile range of csoftmax's samples.)")
    for n in case_notes:
        print(f"note: {n}")

    if not args.no_png:
        title = (f"csoftmax {cfg['version']} [{cfg['active']}] on {cpu_model()}"
                 f"{' (quick)' if args.quick else ''}")
        skipped = write_png(rows, args.png, title)
        print(f"note: {skipped}" if skipped else f"chart: {args.png}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "cpu_model": cpu_model(), "summary": rows, "raw": raw}, f, indent=1)
        print(f"raw times: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
