#!/usr/bin/env bash
# Valgrind memcheck over a representative set of csoftmax calls (every kernel path, dtype and hostile layout, on
# every kernel set valgrind can run), in a temporary copy of the repository built with -g (the in-place build in
# the source tree is not touched).
#
#   tools/valgrind.sh             # exit 0: no memcheck error in csoftmax's own frames; 1: errors there
#   VALGRIND_KEEP=1 tools/valgrind.sh   # keep the temporary directory (XML report, build) for inspection
#
# CPython noise: PYTHONMALLOC=malloc (so memcheck sees Python's allocations as plain mallocs and pymalloc's
# arena tricks do not show up), a generated suppression file for the interpreter's known start-up and exit
# reports, and, above all, classification: an error counts only if a frame of its stack (or, for a leak, of its
# allocation stack) is in csoftmax's extension module - except "possibly lost" blocks, which at exit are the
# type objects and docstrings the module creates once at import. Other errors are summarised as noise.
# Valgrind does not emulate AVX-512 and hides it from cpuid, so the AVX2 and baseline kernel sets are checked.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/csoftmax-valgrind.XXXXXX")
cleanup() { if [ "${VALGRIND_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "copy and build with debug information"
mkdir -p "$WORK/src"
(cd "$ROOT" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.so' --exclude='*.egg-info' \
    --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.benchmarks --exclude='__pycache__' \
    --exclude='./csoftmax/_*.c' -cf - .) | (cd "$WORK/src" && tar -xf -)
(cd "$WORK/src" && CSOFTMAX_EXTRA_CFLAGS="-g -fno-omit-frame-pointer" "$PY" setup.py build_ext --inplace \
    >"$WORK/build.log" 2>&1) || { tail -40 "$WORK/build.log"; exit 1; }
EXT=$(ls "$WORK"/src/csoftmax/_*.so | head -1)
echo "extension: $EXT"

cat >"$WORK/python.supp" <<'EOF'
# CPython's own reports under memcheck (the interpreter is not the subject here)
{
   cpython-unicode-and-dict-probes
   Memcheck:Cond
   fun:PyUnicode_*
}
{
   cpython-address-in-range
   Memcheck:Addr4
   fun:address_in_range
}
{
   cpython-address-in-range-cond
   Memcheck:Cond
   fun:address_in_range
}
{
   cpython-address-in-range-value
   Memcheck:Value8
   fun:address_in_range
}
{
   dlopen-of-extension-modules
   Memcheck:Leak
   ...
   fun:_dl_open
}
{
   thread-stacks-of-detached-workers
   Memcheck:Leak
   match-leak-kinds: possible
   ...
   fun:pthread_create*
}
EOF

cat >"$WORK/workload.py" <<'EOF'
"""A representative set of csoftmax calls, each checked against the long-double reference (so that a value read
from uninitialised memory would be used in a comparison, which memcheck reports)."""
import sys
import numpy as np
import csoftmax
from csoftmax import _csoftmax
from csoftmax._reference import softmax_reference

assert csoftmax.__file__.startswith(sys.argv[1]), csoftmax.__file__
calls = 0


def check(x, dim, **kw):
    global calls
    calls += 1
    y = csoftmax.softmax(x, dim, **kw)
    dt = np.dtype(kw.get("dtype") or (x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else np.float64))
    with np.errstate(all="ignore"):
        ref = softmax_reference(np.asarray(x), dim % max(np.ndim(x), 1), out_dtype=np.longdouble)
        tol = {2: 2e-3, 4: 1e-5, 8: 1e-13}[dt.itemsize]
        ok = np.isnan(y) == np.isnan(ref)
        tiny = float(np.finfo(dt).smallest_subnormal)          # absolute: results in the subnormal range
        ok &= np.isnan(ref) | (np.abs(y.astype(np.longdouble) - ref) <= tol * np.abs(ref) + tiny)
    if not np.all(ok):
        raise AssertionError(f"wrong result: {x.dtype} {x.shape} {x.strides} dim {dim} {kw}")


def misaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    return v


rng = np.random.default_rng(0)
for kernels in _csoftmax.available_kernels():
    _csoftmax.use_kernels(kernels)
    print("kernel set", kernels, flush=True)
    for dtype in (np.float32, np.float64, np.float16):
        for shape in [(7,), (3, 5), (20, 16), (9, 3), (33, 17), (4, 3, 5), (2, 3, 4, 5)]:
            a = (rng.standard_normal(shape) * 4).astype(dtype)
            views = [a, np.asfortranarray(a), a.T, a[..., ::-1], a.astype(a.dtype.newbyteorder("S")),
                     misaligned(a), np.broadcast_to(a[:1], a.shape)]
            if a.ndim >= 2:
                views += [a[::2, ::-1], np.lib.stride_tricks.as_strided(a, shape=(a.shape[0] - 1, 2),
                                                                        strides=(a.strides[1], a.strides[1]))]
            for v in views:
                for dim in range(-v.ndim, v.ndim):
                    check(v, dim)
        # short rows (across-rows kernels, in-register transposes reading whole vectors per row)
        for n in (1, 2, 3, 5, 8, 9, 15, 16):
            a = rng.standard_normal((37, n)).astype(dtype)
            check(a, 1)
            check(np.repeat(a, 2, axis=1)[:, ::2], 1)
            check(np.ascontiguousarray(np.pad(a, ((0, 0), (0, 3))))[:, :n], 1)
        # long rows (beyond the row buffer / cache budget) and many lanes (beyond one lanes panel)
        check(rng.standard_normal((2, 70_000)).astype(dtype), 1)
        check(rng.standard_normal((3, 5000)).astype(dtype), 0)
        check(rng.standard_normal((70_000, 2)).astype(dtype)[::-1], 0)
        # sizes that go to the thread pool (2**17+ elements; long rows cut into pieces)
        check(rng.standard_normal((1, 300_000)).astype(dtype), 1)
        check(rng.standard_normal((600, 300)).astype(dtype), 0)
        # special values
        sp = np.array([[0.0, np.inf, 1.0], [-np.inf] * 3, [np.nan, 1.0, 2.0], [-np.inf, 0.0, 1e4],
                       [5e-324, -0.0, 0.0]]).astype(dtype)
        check(sp, 1)
        check(np.ascontiguousarray(sp.T), 0)
        check(np.array(3.0, dtype=dtype), 0)
        check(np.empty((0, 4), dtype=dtype), 1)
    check(rng.standard_normal((5, 9)).astype(np.float16), 1, dtype=np.float64)
    check(rng.standard_normal((5, 9)), 1, dtype=np.float16)
    check(np.array([0, 255], dtype=np.uint8), 0)
    check([[1.0, 2.0], [3.0, 4.0]], 1)
    for bad in ((np.ones(3), 1.5), (np.ones(3), 4), (np.array(["a"]), 0)):
        try:
            csoftmax.softmax(*bad)
        except (TypeError, IndexError):
            pass
        else:
            raise AssertionError(bad)
print(f"{calls} checked calls", flush=True)
EOF

# valgrind must start the interpreter itself, not a wrapper script (pyenv shims are bash scripts)
PYBIN=$("$PY" -c 'import sys; print(sys.executable)')
step "memcheck ($PYBIN)"
set +e
(cd "$WORK/src" && PYTHONPATH="$WORK/src" PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=0 --leak-check=full \
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite --track-origins=yes \
    --suppressions="$WORK/python.supp" --xml=yes --xml-file="$WORK/memcheck.xml" --log-file="$WORK/memcheck.log" \
    "$PYBIN" "$WORK/workload.py" "$WORK/src/")
STATUS=$?
set -e
[ $STATUS -eq 0 ] || { echo "the workload failed under valgrind (status $STATUS)"; tail -30 "$WORK/memcheck.log"; exit 1; }

step "classification"
"$PY" - "$WORK/memcheck.xml" "$EXT" <<'EOF'
import collections
import os
import sys
import xml.etree.ElementTree as ET

xml_path, ext = sys.argv[1], os.path.realpath(sys.argv[2])
root = ET.parse(xml_path).getroot()
ours, noise = [], collections.Counter()


def frames(stack):
    for fr in stack.findall("frame"):
        yield {k: (fr.findtext(k) or "") for k in ("obj", "fn", "file", "line")}


possibly_ours = 0
for err in root.findall("error"):
    kind = err.findtext("kind")
    text = err.findtext("what") or err.findtext("xwhat/text") or ""
    stacks = err.findall("stack")
    in_ours = any(os.path.realpath(f["obj"]) == ext for s in stacks for f in frames(s))
    if in_ours and kind == "Leak_PossiblyLost":
        # interior pointers to objects made once at import (types, docstrings): not a per-call leak
        possibly_ours += 1
    elif in_ours:
        lines = [f"{kind}: {text}"]
        for s in stacks:
            for f in list(frames(s))[:12]:
                where = f"{f['file']}:{f['line']}" if f["file"] else os.path.basename(f["obj"])
                lines.append(f"    {f['fn'] or '?'}  ({where})")
            lines.append("  ---")
        ours.append("\n".join(lines))
    else:
        top = next(iter(frames(stacks[0])), {"fn": "?", "obj": "?"}) if stacks else {"fn": "?", "obj": "?"}
        noise[(kind, top["fn"] or os.path.basename(top["obj"]))] += 1

supp = sum(int(p.findtext("count") or 0) for p in root.findall("suppcounts/pair"))
print(f"memcheck: {len(ours)} error(s) in csoftmax frames (invalid reads/writes, uninitialised values, definite "
      f"leaks...); {possibly_ours} 'possibly lost' blocks allocated once at import through csoftmax's module init "
      f"(not counted); {sum(noise.values())} reports elsewhere (CPython/NumPy noise, not counted); {supp} suppressed")
for (kind, fn), n in noise.most_common(10):
    print(f"  noise: {n} x {kind} in {fn}")
for report in ours:
    print(report)
sys.exit(1 if ours else 0)
EOF
