"""The sweep of `python benchmarks/compare.py --sweep`: every function x dtype x layout x mask x value pattern on a
grid of its own, each cell timed against the torch equivalent and against plain softmax of the same shape, layout
and dtype, so that a cliff shows up before a user finds it.

A cell is (function, dtype, layout, variant). Its three calls are timed interleaved (one sample of each per round,
the order shuffled, median of the rounds), csoftmax and torch pinned to one thread. Two ratios per cell:

  cs/torch   csoftmax's time / torch's equivalent call (lower is better; above 1 is a loss)
  cs/plain   csoftmax's time / csoftmax.softmax on the same input shape, layout and dtype (float16: float32 input
             of the same shape; dtype= widening: the wider type's input) - the issue's per-function targets
"""
from __future__ import annotations

import functools
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

FUNCTIONS = ("softmax", "softmin", "log_softmax", "softmax_backward", "log_softmax_backward")

# targets on cs/plain, by what makes the cell differ from plain softmax (the list); the loosest applies
# when a cell has two reasons (log_softmax of float16: 1.6 x 1.3)
FUNCTION_TARGET = {"softmax": 1.0, "softmin": 1.25, "log_softmax": 1.6, "softmax_backward": 2.2,
                   "log_softmax_backward": 2.2}
VARIANT_TARGET = {"": 1.0, "where": 1.7, "-inf 20%": 1.3, "far -1e4": 1.3, "causal": 1.3, "dtype=": 1.3,
                  "out=x": 1.25}
FLOAT16_TARGET = 1.3


@dataclass
class Layout:
    name: str
    shape: tuple
    dim: int
    view: Callable[[np.ndarray], np.ndarray] = lambda a: a   # applied to a C array of `base` shape
    base: Optional[tuple] = None                              # the allocated shape when the view differs


LAYOUTS = [
    Layout("rows (4096,1024)", (4096, 1024), -1),
    Layout("rows (64,1000)", (64, 1000), -1),
    Layout("short rows (200000,10)", (200_000, 10), -1),
    Layout("short rows (524288,2)", (524_288, 2), -1),
    Layout("long row (2,1048576)", (2, 1_048_576), -1),
    Layout("first axis (1024,4096)", (1024, 4096), 0),
    Layout("first axis (2,1048576)", (2, 1_048_576), 0),
    Layout("middle (32,128,128)", (32, 128, 128), 1),
    Layout("middle (16,3,224,224)", (16, 3, 224, 224), 1),
    Layout("few lanes (4,65536,4)", (4, 65536, 4), 1),
    Layout("transposed (1024,4096).T", (4096, 1024), -1, lambda a: a.T, (1024, 4096)),
    Layout("strided rows [:, ::2]", (2048, 1024), -1, lambda a: a[:, ::2], (2048, 2048)),
]

# (variant, functions it applies to, dtypes it applies to, layouts it applies to (None: all))
VARIANTS = [
    ("", FUNCTIONS, ("float16", "float32", "float64"), None),
    ("where", ("softmax", "softmin", "log_softmax"), ("float16", "float32", "float64"),
     ("rows (4096,1024)", "rows (64,1000)", "short rows (200000,10)", "first axis (1024,4096)",
      "middle (32,128,128)", "few lanes (4,65536,4)")),
    ("-inf 20%", ("softmax", "log_softmax"), ("float32", "float64"),
     ("rows (4096,1024)", "rows (64,1000)", "first axis (1024,4096)", "middle (32,128,128)")),
    ("far -1e4", ("softmax", "log_softmax"), ("float32",), ("rows (4096,1024)", "first axis (1024,4096)")),
    ("causal", ("softmax", "log_softmax"), ("float16", "float32"), ("causal (4,1024,1024)",)),
    ("dtype=", ("softmax", "log_softmax", "softmin"), ("float16", "float32"),
     ("rows (4096,1024)", "short rows (200000,10)", "first axis (1024,4096)", "middle (32,128,128)",
      "few lanes (4,65536,4)")),
    ("out=x", ("softmax", "log_softmax", "softmin"), ("float32", "float64"),
     ("rows (4096,1024)", "rows (64,1000)", "short rows (200000,10)", "first axis (1024,4096)",
      "middle (32,128,128)")),
]
CAUSAL = Layout("causal (4,1024,1024)", (4, 1024, 1024), -1)


@dataclass
class Cell:
    function: str
    dtype: str
    layout: Layout
    variant: str

    @property
    def name(self) -> str:
        v = f" {self.variant}" if self.variant else ""
        return f"{self.function} {self.dtype} {self.layout.name}{v}"

    @property
    def target(self) -> float:
        t = FUNCTION_TARGET[self.function] * VARIANT_TARGET[self.variant]
        if self.dtype == "float16" and self.variant != "dtype=":
            t *= FLOAT16_TARGET
        return t


def cells(functions=FUNCTIONS, dtypes=("float16", "float32", "float64"), match=()):
    out = []
    for variant, fns, dts, lays in VARIANTS:
        layouts = [CAUSAL] if lays == ("causal (4,1024,1024)",) else [
            l for l in LAYOUTS if lays is None or l.name in lays]
        for layout in layouts:
            for fn in fns:
                if fn not in functions:
                    continue
                for dt in dts:
                    if dt not in dtypes:
                        continue
                    c = Cell(fn, dt, layout, variant)
                    if match and not any(m.replace(" ", "").lower() in c.name.replace(" ", "").lower()
                                         for m in match):
                        continue
                    out.append(c)
    return out


def _array(layout: Layout, dtype, rng, scale=1.0):
    base = layout.base or layout.shape
    a = (rng.standard_normal(base, dtype=np.float32) * scale).astype(dtype)
    return layout.view(a)


def _wider(dtype: str) -> str:
    return {"float16": "float32", "float32": "float64"}[dtype]


def build(cell: Cell, rng, csoftmax, torch):
    """(csoftmax call, torch call, plain-softmax call) for a cell; all three do the same amount of work."""
    lay, dt, fn, var = cell.layout, np.dtype(cell.dtype), cell.function, cell.variant
    dim = lay.dim
    x = _array(lay, dt, rng, 4.0 if fn == "log_softmax" else 1.0)
    plain_dtype = np.float32 if dt == np.float16 and var != "dtype=" else dt
    if var == "dtype=":
        plain_dtype = np.dtype(_wider(cell.dtype))
    plain_x = x if plain_dtype == dt else _array(lay, plain_dtype, rng)
    plain = functools.partial(csoftmax.softmax, plain_x, dim)

    def t_(a):
        try:
            return torch.from_numpy(a)
        except (ValueError, RuntimeError, TypeError):
            return torch.from_numpy(np.ascontiguousarray(a))

    tfn = {"softmax": torch.softmax, "softmin": torch.nn.functional.softmin, "log_softmax": torch.log_softmax}
    if fn in ("softmax_backward", "log_softmax_backward"):
        forward = csoftmax.softmax if fn == "softmax_backward" else csoftmax.log_softmax
        y = lay.view(np.empty(lay.base or lay.shape, dt))       # laid out as g
        y[...] = forward(x.astype(np.float32) if dt == np.float16 else x, dim)
        g = _array(lay, dt, rng)
        cs = functools.partial(getattr(csoftmax, fn), g, y, dim)
        op = torch._softmax_backward_data if fn == "softmax_backward" else torch._log_softmax_backward_data
        gt, yt = t_(g), t_(y)
        th = functools.partial(op, gt, yt, dim, yt.dtype)
        return cs, th, plain
    cs_f = getattr(csoftmax, fn)
    t = t_(x)
    if var in ("", "out=x", "dtype="):
        if var == "out=x":
            work = x.copy(order="K")
            # repeated calls in place do the same work: softmax/softmin of their own output stay finite, and
            # log_softmax of its own output is itself to within an ulp (its logsumexp is 0)
            cs = functools.partial(cs_f, work, dim, out=work)
        elif var == "dtype=":
            cs = functools.partial(cs_f, x, dim, dtype=_wider(cell.dtype))
        else:
            cs = functools.partial(cs_f, x, dim)
        if var == "dtype=":
            tdt = getattr(torch, _wider(cell.dtype))
            th = functools.partial(tfn[fn], t, dim, dtype=tdt)
        else:
            th = functools.partial(tfn[fn], t, dim)
        return cs, th, plain
    if var == "where":
        mask = rng.random(lay.base or lay.shape) < 0.8
        mask = lay.view(mask)
        cs = functools.partial(cs_f, x, dim, where=mask)
        mt = t_(mask)
        fill = float("inf") if fn == "softmin" else float("-inf")
        th = lambda: tfn[fn](t.masked_fill(~mt, fill), dim)   # noqa: E731 - what a torch user writes
        return cs, th, plain
    # value patterns: the input itself carries them
    xv = x.copy(order="K")
    if var == "-inf 20%":
        xv[rng.random(xv.shape) < 0.2] = -np.inf
    elif var == "far -1e4":
        xv[rng.random(xv.shape) < 0.2] = -1e4
    elif var == "causal":
        n = xv.shape[-1]
        xv[..., np.triu(np.ones((n, n), bool), 1)] = -np.inf
    tv = t_(xv)
    return functools.partial(cs_f, xv, dim), functools.partial(tfn[fn], tv, dim), plain


def _time(calls, budget, rng_order):
    """Median seconds per call of each call, interleaved rounds."""
    numbers = []
    for c in calls:
        c()
        n = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                c()
            el = time.perf_counter() - t0
            if el >= 2e-3 or n >= 1 << 16:
                break
            n = max(n * 2, int(2.5e-3 / max(el / n, 1e-9)))
        numbers.append(n)
    times = [[] for _ in calls]
    start = time.perf_counter()
    rounds = 0
    while rounds < 5 or (time.perf_counter() - start < budget and rounds < 100):
        order = list(range(len(calls)))
        rng_order.shuffle(order)
        for i in order:
            t0 = time.perf_counter()
            for _ in range(numbers[i]):
                calls[i]()
            times[i].append((time.perf_counter() - t0) / numbers[i])
        rounds += 1
    return [statistics.median(t) for t in times]


def run(csoftmax, torch, budget=0.5, match=(), functions=FUNCTIONS, worst=20, out=sys.stdout):
    """Times every cell and prints the grid's worst ratios; returns the rows."""
    rng = np.random.default_rng(0)
    order = random.Random(0)
    torch.set_num_threads(1)
    saved = csoftmax.get_num_threads()
    csoftmax.set_num_threads(1)
    rows = []
    todo = cells(functions=functions, match=match)
    t_start = time.perf_counter()
    try:
        for i, cell in enumerate(todo):
            try:
                calls = build(cell, rng, csoftmax, torch)
            except Exception as exc:          # a cell that cannot run is a finding, not a crash of the sweep
                rows.append(dict(cell=cell.name, error=f"{type(exc).__name__}: {exc}"))
                continue
            cs, th, plain = _time(calls, budget, order)
            rows.append(dict(cell=cell.name, cs=cs, torch=th, plain=plain, vs_torch=cs / th, vs_plain=cs / plain,
                             target=cell.target))
            print(f"  [{i + 1}/{len(todo)}] {cell.name}: cs/torch {cs / th:.2f}, cs/plain {cs / plain:.2f}",
                  file=sys.stderr, flush=True)
    finally:
        csoftmax.set_num_threads(saved)
    report(rows, worst, out, time.perf_counter() - t_start)
    return rows


def _fmt(s):
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


def report(rows, worst, out, elapsed):
    ok = [r for r in rows if "error" not in r]
    print(f"sweep: {len(ok)} cells in {elapsed:.0f} s (csoftmax and torch at 1 thread, medians of interleaved "
          f"rounds)", file=out)
    for r in rows:
        if "error" in r:
            print(f"ERROR {r['cell']}: {r['error']}", file=out)
    print(f"\n### worst {worst} by cs/torch (above 1: slower than torch)\n", file=out)
    print("| cell | csoftmax | torch | cs/torch | cs/plain | target cs/plain |", file=out)
    print("|---|--:|--:|--:|--:|--:|", file=out)
    for r in sorted(ok, key=lambda r: -r["vs_torch"])[:worst]:
        print(f"| {r['cell']} | {_fmt(r['cs'])} | {_fmt(r['torch'])} | {r['vs_torch']:.2f} | {r['vs_plain']:.2f} | "
              f"{r['target']:.2f} |", file=out)
    print(f"\n### worst {worst} by cs/plain over its target (above 1: target missed)\n", file=out)
    print("| cell | cs/plain | target | over target | cs/torch |", file=out)
    print("|---|--:|--:|--:|--:|", file=out)
    for r in sorted(ok, key=lambda r: -r["vs_plain"] / r["target"])[:worst]:
        print(f"| {r['cell']} | {r['vs_plain']:.2f} | {r['target']:.2f} | {r['vs_plain'] / r['target']:.2f} | "
              f"{r['vs_torch']:.2f} |", file=out)
    lost = sum(r["vs_torch"] > 1 for r in ok)
    missed = sum(r["vs_plain"] > r["target"] for r in ok)
    print(f"\n{lost} of {len(ok)} cells slower than torch; {missed} over their cs/plain target.", file=out)
