"""Mutation check: plants realistic bugs one at a time and requires the fast test suite to catch each.

    python tools/mutate.py              every mutant
    python tools/mutate.py --rotate 2   two of them, a different pair on each commit (what .ci/run does)
    python tools/mutate.py --only ID,ID / --list

The tracked files are copied to a scratch folder and built there once (with ccache when it is installed, so a
mutant rebuilds only what it touches). The unmutated copy must pass the fast suite first, so that no mutant is
counted as killed by a failure it did not cause; then each mutant is applied to the copy, rebuilt when it touches
compiled code, and the fast suite (`pytest -x`) runs against it. A mutant whose anchor text is missing or not
unique is an error, so the list cannot rot silently. Exit status 0 only when every mutant run was killed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutant(NamedTuple):
    id: str
    path: str
    old: str
    new: str
    what: str


MUTANTS = [
    # ---- Python policy
    Mutant("py-implicit-dim", "csoftmax/_api.py",
           "dim = 0 if ndim in (0, 1, 3) else 1", "dim = 0 if ndim in (0, 1) else 1",
           "the legacy implicit dim of a 3-d input"),
    Mutant("py-dim-range", "csoftmax/_api.py",
           "(-ndim, ndim - 1)", "(-ndim - 1, ndim - 1)",
           "a dim one below the range accepted"),
    Mutant("py-softmin-policy", "csoftmax/_api.py",
           '_family("softmin", OP_SOFTMAX, True,', '_family("softmin", OP_SOFTMAX, False,',
           "softmin without its negation outside the fast path"),
    Mutant("py-backward-mask-grad", "csoftmax/_api.py",
           "        g = np.where(hidden, 0, g)\n", "        g = np.asarray(g)\n",
           "masked gradient entries take part in the backward row sums"),
    Mutant("py-out-readonly", "csoftmax/_api.py",
           "    if not out.flags.writeable:\n", "    if False:\n",
           "a read-only out= accepted"),
    Mutant("py-masked-where", "csoftmax/_api.py",
           "where.filled(False)", "where.filled(True)",
           "masked entries of a masked where= taken as True"),
    Mutant("py-tuple-dim-copy", "csoftmax/_api.py",
           "direct = np.shares_memory(target, out) and target.flags.aligned", "direct = target.flags.aligned",
           "tuple dims whose axes do not merge in place: the result lost in a copy"),
    Mutant("py-omp-list", "csoftmax/_config.py",
           'first = value.split(",")[0] if variable == "OMP_NUM_THREADS" else value', "first = value",
           "OMP_NUM_THREADS=4,2 not read as 4"),
    Mutant("py-cli-status", "csoftmax/__main__.py",
           '        print(f"csoftmax: error: {exc}", file=sys.stderr)\n        return 2',
           '        print(f"csoftmax: error: {exc}", file=sys.stderr)\n        return 1',
           "the CLI's usage errors exit with 1"),
    Mutant("py-state-merge", "csoftmax/_rows.py",
           "np.asarray(l, work) + (np.asarray(m, work) - shift)", "np.asarray(l, work) + (shift - np.asarray(m, work))",
           "the merge of row states (SoftmaxState, Dask) scales by the wrong sign"),
    Mutant("py-dask-barrier", "csoftmax/dask.py",
           "waits = [TaskRef(k) for k in sorted(rows[key])]",
           "waits = [TaskRef(k) for k in sorted(set().union(*rows.values()))]",
           "every block of Dask's pass 2 waits for every row's state (a whole-array barrier)"),
    # ---- the Cython bridge
    Mutant("pyx-out-overlap", "csoftmax/_csoftmax.pyx",
           "return (x_hi <= o_lo or o_hi <= x_lo) and _strides_nest(o)",
           "return (x_hi <= o_lo + cnp.PyArray_ITEMSIZE(x) or o_hi <= x_lo) and _strides_nest(o)",
           "an out= one element into the input taken as clear of it"),
    Mutant("pyx-memory-order", "csoftmax/_csoftmax.pyx",
           "        result = PyArray_NewLikeArray(x, cnp.NPY_KEEPORDER, NULL, 0)",
           "        result = PyArray_NewLikeArray(x, cnp.NPY_CORDER, NULL, 0)",
           "small results C-ordered whatever the input's order"),
    # ---- the engine (driver)
    Mutant("eng-run-block", "csoftmax/src/engine.c",
           "const csm_idx block = CSM_TILE_BYTES / p->es / p->width * p->width;",
           "const csm_idx block = CSM_TILE_BYTES / p->es / p->width * p->width - 1;",
           "staged runs cut into blocks that are not whole vectors"),
    Mutant("eng-negate-staged", "csoftmax/src/engine.c",
           "return (p->c->negate && p->direct[OPD_IN] ? CSM_IN_NEGATE : 0) |",
           "return (p->c->negate ? CSM_IN_NEGATE : 0) |",
           "staged softmin input of the row and lanes passes negated twice"),
    Mutant("eng-negate-rows", "csoftmax/src/engine.c",
           "a.negate = c->negate;\n        if (p->mask_direct) {\n            a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0 * L->lane[OPD_MASK];\n            a.ms = L->lane[OPD_MASK];\n            p->k->rows(&a);",
           "a.negate = 0;\n        if (p->mask_direct) {\n            a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0 * L->lane[OPD_MASK];\n            a.ms = L->lane[OPD_MASK];\n            p->k->rows(&a);",
           "softmin rows read in place without their negation"),
    Mutant("eng-half-store-e", "csoftmax/src/engine.c",
           "p->store_e = c->func == CSM_SOFTMAX && !p->apply && !p->half && p->direct[OPD_OUT] &&\n"
           "                     (size_t)p->run_len",
           "p->store_e = c->func == CSM_SOFTMAX && !p->apply && p->direct[OPD_OUT] &&\n"
           "                     (size_t)p->run_len",
           "float16 long rows keep their exponentials in the float16 output (rounded twice)"),
    Mutant("eng-mask-f16", "csoftmax/src/engine.c",
           "const uint16_t h = log ? 0xfc00 : 0;", "const uint16_t h = log ? 0xfc00 : 0x7e00;",
           "float16 rows whose every entry is masked give NaN, not 0"),
    Mutant("eng-mask-stride", "csoftmax/src/engine.c",
           "if (mk[i * mask_stride]) continue;", "if (mk[i]) continue;",
           "the masked-row fix-up reads a strided mask as packed"),
    Mutant("eng-f16-round", "csoftmax/src/engine.c",
           "uint32_t r = mag + 0xc8000fffu + ((mag >> 13) & 1u);", "uint32_t r = mag + 0xc8000000u;",
           "scalar float16 conversion truncates instead of rounding"),
    # ---- the kernels
    Mutant("ker-stage-negate", "csoftmax/src/kernels.inc",
           "for (csm_idx i = 0; i < len; i++) tf[i] = -((const float *)raw)[i];",
           "for (csm_idx i = 0; i < len; i++) tf[i] = ((const float *)raw)[i];",
           "staged float32 softmin input loses its negation (long and strided rows)"),
    Mutant("ker-stage-negate-late", "csoftmax/src/kernels.inc",
           "if (negate && !negated) {", "if (negate && negated) {",
           "float16 and widened softmin input loses its negation"),
    Mutant("ker-stage-mask-stride", "csoftmax/src/kernels.inc",
           "mask_store[i] = mk[i * mask->stride];", "mask_store[i] = mk[i];",
           "a strided or broadcast mask read as packed"),
    Mutant("ker-stage-gather-tile", "csoftmax/src/kernels.inc",
           "gather_raw(src, s, len, ct == CSM_F32 ? (void *)tf : (void *)td);", "gather_raw(src, s, len, tf);",
           "strided float64 input gathered to the float32 offset of the tile"),
    Mutant("ker-rows-mask-group", "csoftmax/src/kernels_type.inc",
           "TY(masked_in)(v[r], mk + r * ms + i, NL, T_NINF);\n        if (staged)",
           "TY(masked_in)(v[r], mk + i, NL, T_NINF);\n        if (staged)",
           "every row of a group in the rows kernel read with its first row's where= mask"),
    Mutant("ker-rows-mask-one", "csoftmax/src/kernels_type.inc",
           "            if (neg) v = -v;\n            if (mk) v = TY(masked_in)(v, mk + i, left, T_NINF);\n",
           "            if (neg) v = -v;\n",
           "the rows kernel's rows outside a group read without their where= mask"),
    Mutant("ker-masked-nan-rows", "csoftmax/src/kernels_type.inc",
           "            if (masked) TY(masked_nan_row)(yr[r], mk + r * ms, n, 0, half);\n", "",
           "fully masked rows of a group in the rows kernel left NaN"),
    Mutant("ker-strip-masked-nan", "csoftmax/src/kernels_type.inc",
           "out = TY(masked_in)(out, mk + s * ms + r * NL, partial ? left : NL, 0);", "out = out;",
           "fully masked lanes of a softmax strip left NaN"),
    Mutant("ker-strip-mask-step", "csoftmax/src/kernels_type.inc",
           "mk + s * ms + r * NL, partial ? left : NL, T_NINF);\n                CSM_ST(CSM_E(s, r)",
           "mk + r * NL, partial ? left : NL, T_NINF);\n                CSM_ST(CSM_E(s, r)",
           "every step of a softmax strip read with the first step's where= mask"),
    Mutant("ker-strip-log-mask", "csoftmax/src/kernels_type.inc",
           "const char *xb = masked ? y : x;", "const char *xb = x;",
           "log_softmax strips' exponentials read the input without its where= mask"),
    Mutant("eng-mask-lanes-offset", "csoftmax/src/engine.c",
           "a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0;",
           "a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK];",
           "the strips of a panel after the first read the first panel's where= mask"),
    Mutant("eng-fixup-scan", "csoftmax/src/engine.c",
           "            memcpy(&v, q + i * stride, 4);\n            nan |= v != v;",
           "            memcpy(&v, q + i * stride, 4);\n            nan = v != v;",
           "the scan for fully masked float32 rows sees only the last of them"),
    Mutant("ker-load-negate", "csoftmax/src/kernels_type.inc",
           "const V v = XLD(half, p, i);\n    return neg ? -v : v;", "const V v = XLD(half, p, i);\n    return v;",
           "the rows' and row passes' whole vectors of softmin input not negated"),
    Mutant("ker-load-negate-fill", "csoftmax/src/kernels_type.inc",
           "XLD_PART(half, p, i, n, neg ? -fill : fill);", "XLD_PART(half, p, i, n, fill);",
           "softmin's partial vectors pad with the negated fill (+inf into the maximum)"),
    Mutant("ker-lanes-negate", "csoftmax/src/kernels_type.inc",
           "#define LD_IN(row) (left == NL ? TY(load_in)((row), i, neg, half)",
           "#define LD_IN(row) (left == NL ? TY(load_in)((row), i, 0, half)",
           "the lanes passes read softmin's whole vectors without their negation"),
    Mutant("ker-strip-negate", "csoftmax/src/kernels_type.inc",
           ": TY(load_in)((p), (r) * NL, neg, half))", ": TY(load_in)((p), (r) * NL, 0, half))",
           "the fused lanes' strips read softmin's input without its negation"),
    Mutant("ker-short-negate", "csoftmax/src/kernels_type.inc",
           "for (csm_idx j = 0; j < n; j++) col[p][j] = -col[p][j];",
           "for (csm_idx j = 0; j < n; j++) col[p][j] = col[p][j];",
           "short softmin rows not negated"),
    Mutant("ker-log-half", "csoftmax/src/kernels_type.inc",
           "if ((in) & CSM_IN_HALF) CALL(0, 1);", "if ((in) & CSM_IN_HALF) CALL(0, 0);",
           "log_softmax's float16 passes read their input as float32"),
    Mutant("ker-backward-sign", "csoftmax/src/kernels_type.inc",
           "? g - TY(exp_output)(y) * s :", "? g + TY(exp_output)(y) * s :",
           "log_softmax_backward adds the sum term"),
    Mutant("eng-state-row", "csoftmax/src/engine.c",
           "st[1] = ((const double *)pt->a)[q];", "st[1] = ((const double *)pt->a)[0];",
           "logsumexp's streamed paths give every row the first row's log S"),
    Mutant("ker-state-flush", "csoftmax/src/kernels.inc",
           "s->y += s->n * s->ys;", "s->y += (s->n - 1) * s->ys;",
           "logsumexp's waiting short rows land one row early after the first block"),
    Mutant("ker-state-count", "csoftmax/src/kernels.inc",
           "static inline vl vd_count_to_vl(vd c) { return (vl)(c + vd_set1(CSM_ROUND_F64)) - (vl)vd_set1(CSM_ROUND_F64); }",
           "static inline vl vd_count_to_vl(vd c) { (void)c; return vl_set1(1); }",
           "logsumexp's short rows forget the entries tied with the maximum"),
    Mutant("ker-log-count", "csoftmax/src/kernels.inc",
           "out[r] = (count[r] - vd_set1(1.0)) * vd_set1(", "out[r] = count[r] * vd_set1(",
           "log1p of the float64 log-sum counts the top entry twice"),
    Mutant("ker-log-f32-ties", "csoftmax/src/kernels.inc",
           "CSM_FMA_F32(scale[r], t_lo[r], (count[r] - vf_set1(1.0f)) * up)",
           "CSM_FMA_F32(scale[r], t_lo[r], vf_set1(0.0f))",
           "the float32 log-sum forgets the entries tied with the maximum"),
    Mutant("ker-lane-mask", "csoftmax/src/kernels.inc",
           "return iota < vi_set1((int32_t)n);", "return iota <= vi_set1((int32_t)n);",
           "float32 partial vectors take one lane too many"),
    Mutant("ker-hmax", "csoftmax/src/kernels.inc",
           "for (int w = CSM_NF / 2; w >= 1; w /= 2) a = vf_max_num(",
           "for (int w = CSM_NF / 2; w > 1; w /= 2) a = vf_max_num(",
           "the float32 row maximum misses half the lanes' last step"),
    Mutant("ker-avx2-f16-store", "csoftmax/src/kernels_avx2.c",
           "_mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));",
           "_mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_ZERO));",
           "AVX2 float16 stores truncate"),
]

COMPILED = (".c", ".h", ".inc", ".pyx", ".pxd")


def run(cmd, cwd, env, log, timeout=None):
    with open(log, "ab") as out:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode


def build(copy, env, log):
    if run([sys.executable, "setup.py", "build_ext", "--inplace"], copy, env, log) != 0:
        sys.exit(f"the build failed: see {log}")


def first_failure(log):
    """The first failing test's id in a pytest -x log, or the last line."""
    lines = open(log, errors="replace").read().splitlines()
    for line in lines:
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return lines[-1] if lines else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--rotate", type=int, help="run N mutants, chosen by the commit count")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one mutant's test run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    for m in MUTANTS:
        text = open(os.path.join(ROOT, m.path)).read()
        if text.count(m.old) != 1:
            sys.exit(f"mutant {m.id}: its anchor occurs {text.count(m.old)} times in {m.path} (must be once)")
    if len({m.id for m in MUTANTS}) != len(MUTANTS):
        sys.exit("mutant ids repeat")
    if args.list:
        for m in MUTANTS:
            print(f"{m.id:24} {m.path:28} {m.what}")
        return 0
    chosen = MUTANTS
    if args.only:
        ids = args.only.split(",")
        unknown = set(ids) - {m.id for m in MUTANTS}
        if unknown:
            sys.exit(f"unknown mutant ids: {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m.id in ids]
    elif args.rotate:
        count = int(subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=ROOT, capture_output=True,
                                   text=True, check=True).stdout)
        start = count * args.rotate % len(MUTANTS)
        chosen = [MUTANTS[(start + i) % len(MUTANTS)] for i in range(min(args.rotate, len(MUTANTS)))]

    scratch = tempfile.mkdtemp(prefix="csoftmax-mutate-")
    copy = os.path.join(scratch, "src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        os.makedirs(os.path.join(copy, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(copy, rel))
    env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1")
    if shutil.which("ccache"):
        env.update(CC="ccache " + os.environ.get("CC", "gcc"), CCACHE_DIR=os.path.join(scratch, "ccache"))
    log = os.path.join(scratch, "build.log")
    print(f"building the unmutated copy in {copy} ({'with' if 'CCACHE_DIR' in env else 'without'} ccache)",
          flush=True)
    build(copy, env, log)
    where = subprocess.run([sys.executable, "-c", "import csoftmax; print(csoftmax.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(copy + os.sep):
        sys.exit(f"the tests would import csoftmax from {where!r}, not the copy")
    sanity = os.path.join(scratch, "unmutated.log")
    if run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"], copy, env, sanity) != 0:
        sys.exit(f"the unmutated copy fails its tests: see {sanity}")

    rows, survivors = [], []
    for m in chosen:
        target = os.path.join(copy, m.path)
        original = open(target).read()
        with open(target, "w") as f:
            f.write(original.replace(m.old, m.new))
        log = os.path.join(scratch, f"{m.id}.log")
        began = time.monotonic()
        try:
            if m.path.endswith(COMPILED):
                build(copy, env, log)
            try:
                status = run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"], copy, env, log,
                             timeout=args.timeout)
                verdict = "killed" if status != 0 else "SURVIVED"
                by = first_failure(log) if status != 0 else ""
            except subprocess.TimeoutExpired:
                verdict, by = "killed", f"(no result within {args.timeout:.0f} s)"
        finally:
            with open(target, "w") as f:
                f.write(original)
            if m.path.endswith(COMPILED):
                build(copy, env, os.path.join(scratch, "build.log"))
        if verdict == "SURVIVED":
            survivors.append(m.id)
        rows.append((m.id, m.what, verdict, by, time.monotonic() - began))
        print(f"{m.id:24} {verdict:8} {time.monotonic() - began:6.0f} s  {by}", flush=True)

    print("\n| mutant | planted bug | result | first test to fail |\n|---|---|---|---|")
    for mid, what, verdict, by, _ in rows:
        print(f"| {mid} | {what} | {verdict} | {by} |")
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} mutants killed"
          + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    if args.keep or survivors:
        print(f"logs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
