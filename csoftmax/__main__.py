"""`python -m csoftmax`: a self-check and a short timing table; `python -m csoftmax IN.npy --dim D -o OUT.npy`
applies softmax to a .npy file. Errors are one line on stderr and exit status 2; OUT.npy is written whole or not
at all."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

import numpy as np

import csoftmax
from csoftmax._config import config
from csoftmax._reference import softmax_reference


class UsageError(Exception):
    """A problem with what the user passed: reported in one line, exit status 2."""


def _self_check() -> bool:
    rng = np.random.default_rng(2024)
    cases = []
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12), (np.float16, 2e-3)):
        x = (rng.standard_normal((37, 53, 11)) * 8).astype(dtype)
        for view_name, view in (("C", x), ("F", np.asfortranarray(x)), ("strided", x[::2, ::-1]),
                                ("byte-swapped", x.astype(x.dtype.newbyteorder("S")))):
            for dim in range(-3, 3):
                cases.append((f"{np.dtype(dtype).name:8s} {view_name:12s} dim={dim:2d}", view, dim, tol))
    special = np.array([[0.0, 1.0, np.nan], [1.0, np.inf, 2.0], [-np.inf] * 3, [-np.inf, 0.0, 1e30]])
    cases.append(("special values (NaN, inf)", special, 1, 1e-12))
    failures = []
    for name, x, dim, tol in cases:
        got = csoftmax.softmax(x, dim=dim).astype(np.float64)
        want = softmax_reference(x, dim % x.ndim).astype(np.float64)
        scale = np.float64(np.finfo(x.dtype).tiny) if x.dtype == np.float16 else 0.0
        ok = np.array_equal(np.isnan(got), np.isnan(want)) and np.all(
            np.abs(np.nan_to_num(got) - np.nan_to_num(want)) <= tol * np.abs(np.nan_to_num(want)) + scale
        )
        if not ok:
            failures.append(name)
    print(f"self-check against the NumPy reference: {len(cases) - len(failures)}/{len(cases)} cases agree")
    for name in failures:
        print(f"  MISMATCH: {name}")
    return not failures


def _median_time(fn, budget=0.15) -> float:
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _numpy_softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _timing_table() -> None:
    peers = {"numpy (3 lines)": _numpy_softmax}
    try:
        import scipy.special

        peers["scipy"] = lambda x, dim: scipy.special.softmax(x, axis=dim)
    except ImportError:
        print("(scipy not installed: skipped)")
    try:
        import torch

        peers["torch"] = None
    except ImportError:
        print("(torch not installed: skipped)")
    rng = np.random.default_rng(0)
    shapes = [((1024, 1024), -1), ((1024, 1024), 0), ((100_000, 10), -1), ((16, 64, 64), 1)]
    names = ["csoftmax"] + list(peers)
    print()
    print("| float32 shape, dim | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for shape, dim in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        row = [_median_time(lambda: csoftmax.softmax(x, dim))]
        for name, fn in peers.items():
            if name == "torch":
                t = torch.from_numpy(x)
                row.append(_median_time(lambda: torch.softmax(t, dim)))
            else:
                row.append(_median_time(lambda: fn(x, dim)))
        cells = [f"{row[0] * 1e3:.2f} ms"] + [f"{t * 1e3:.2f} ms ({t / row[0]:.1f}x)" for t in row[1:]]
        print(f"| {shape}, {dim} | " + " | ".join(cells) + " |")
    print("(peer times in parentheses are multiples of csoftmax's time; medians, single process)")


def _report() -> int:
    c = config()
    print(f"csoftmax {c['version']} on {c['cpu']}; kernels: {c['active']} (available: {', '.join(c['available'])})")
    ok = _self_check()
    _timing_table()
    return 0 if ok else 1


def _parse_dim(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--dim must be an integer, not {text!r}") from None


_NPY_MAGIC = b"\x93NUMPY"                           # the first bytes of every .npy file


def _check_magic(in_path: str) -> None:
    """Refuses, by its first bytes, a file that is not a single .npy array (before np.load guesses: it takes any
    other file for pickled data)."""
    try:
        with open(in_path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise UsageError(f"no such file: {in_path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {in_path}: {exc.strerror or exc}") from None
    if not magic:
        raise UsageError(f"{in_path} is empty, not a .npy file")
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):                # a zip file (np.load's test too)
        raise UsageError(f"{in_path} is an .npz archive, not a single .npy array")
    if magic != _NPY_MAGIC:
        raise UsageError(f"{in_path} is not a .npy file")


def _apply_to_file(in_path: str, dim_text: str, out_path: str | None) -> int:
    if out_path is None:
        raise UsageError("missing -o OUT.npy (where to write the result)")
    dim = _parse_dim(dim_text)
    _check_magic(in_path)
    try:
        x = np.load(in_path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {in_path} as a .npy array: {exc}") from None
    if x.dtype.kind != "f" or x.dtype.itemsize > 8:
        raise UsageError(f"{in_path} holds {x.dtype} values; a float16, float32 or float64 array is needed")
    try:
        y = csoftmax.softmax(x, dim=dim)
    except (ValueError, IndexError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    # write next to the target, then rename: a reader never sees a half-written file
    directory = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".csoftmax-", suffix=".npy", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write to {directory}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)                # mkstemp's 0600 -> what np.save's open() would create
        with os.fdopen(fd, "wb") as f:
            # through f.write alone: np.save then writes in chunks whose failure is Python's OSError with errno
            # (for a real file it uses ndarray.tofile, whose error gives only a byte count)
            np.save(types.SimpleNamespace(write=f.write), y)
        os.replace(tmp, out_path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {out_path}: {exc.strerror or exc}") from None
        raise
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csoftmax", description=__doc__)
    parser.add_argument("input", nargs="?", help="a .npy file of float16/32/64 values")
    parser.add_argument("--dim", help="dimension along which rows sum to 1 (default -1)")
    parser.add_argument("-o", "--output", help="where to write the result (.npy)")
    parser.add_argument("--version", action="version", version=f"csoftmax {csoftmax.__version__}")
    args = parser.parse_args(argv)
    if args.input is None and (args.dim is not None or args.output is not None):
        parser.error("--dim and -o need an input file: python -m csoftmax IN.npy --dim D -o OUT.npy")
    try:
        if args.input is None:
            return _report()
        return _apply_to_file(args.input, "-1" if args.dim is None else args.dim, args.output)
    except UsageError as exc:
        print(f"csoftmax: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
