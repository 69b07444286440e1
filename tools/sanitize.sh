#!/usr/bin/env bash
# Builds csoftmax with AddressSanitizer + UndefinedBehaviorSanitizer in a temporary copy of the repository (the
# in-place build in the source tree is not touched) and runs the test suite against that build. Exits non-zero on
# any sanitizer report (or any test failure).
#
#   tools/sanitize.sh                      # the whole suite except the huge-array tests (-m "not slow")
#   tools/sanitize.sh tests/test_api.py    # arguments go to pytest instead of the defaults
#   SANITIZE_SLOW=1 tools/sanitize.sh      # include the huge-array tests (8 GiB outputs: slow under ASan)
#   SANITIZE_TORCH=0|1|auto                # torch tests: auto (default) runs them if `import torch` works under
#                                          # ASan, else blocks torch (its tests then skip; the rest still runs)
#   SANITIZE_KEEP=1                        # keep the temporary directory (build, logs) for inspection
#   CSOFTMAX_FUZZ_SECONDS=N                # the fuzz test's time budget (default here: 30)
#
# How: CSOFTMAX_EXTRA_CFLAGS / CSOFTMAX_EXTRA_LDFLAGS (read by setup.py) add the sanitizers to the extension only;
# the Python interpreter is not instrumented, so libasan is LD_PRELOADed (it must come first; libstdc++ right after
# it, for C++ exceptions in torch) and CPython's own leaks are ignored (detect_leaks=0). PYTHONMALLOC=malloc routes Python's allocations through ASan's malloc too.
# Reports are written to per-process log files (so reports from subprocesses that tests start count as well);
# any such file fails the run, and its contents are printed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/csoftmax-sanitize.XXXXXX")
cleanup() {
    if [ "${SANITIZE_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "copy of the source tree in $WORK/src (without builds, caches and generated C)"
mkdir -p "$WORK/src" "$WORK/logs"
(cd "$ROOT" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.so' --exclude='*.egg-info' \
    --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.benchmarks --exclude=./.asv \
    --exclude='__pycache__' --exclude='./csoftmax/_*.c' -cf - .) | (cd "$WORK/src" && tar -xf -)

step "sanitized build"
SAN_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
SAN_LDFLAGS="-fsanitize=address,undefined"
(cd "$WORK/src" && CSOFTMAX_EXTRA_CFLAGS="$SAN_CFLAGS" CSOFTMAX_EXTRA_LDFLAGS="$SAN_LDFLAGS" \
    "$PY" setup.py build_ext --inplace >"$WORK/build.log" 2>&1) || { tail -40 "$WORK/build.log"; exit 1; }
EXT=$(ls "$WORK"/src/csoftmax/_*.so | head -1)
echo "extension: $EXT"
ldd "$EXT" | grep -E 'libasan|libubsan' || { echo "the extension is not linked with the sanitizer runtimes"; exit 1; }

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "libasan not found (gcc -print-file-name=libasan.so gave $LIBASAN)"; exit 1; }
# libstdc++ right after libasan: ASan intercepts __cxa_throw, and finds the real one only if libstdc++ is loaded
# when ASan starts (CPython is C; without this, the first C++ exception - torch's IndexError for a bad dim -
# ends in "CHECK failed: ... real___cxa_throw")
LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
export LD_PRELOAD="$LIBASAN${LIBSTDCXX:+ $LIBSTDCXX}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:log_path=$WORK/logs/asan:strict_string_checks=0:detect_odr_violation=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$WORK/logs/ubsan"
export PYTHONMALLOC=malloc
export CSOFTMAX_FUZZ_SECONDS=${CSOFTMAX_FUZZ_SECONDS:-30}
export CSOFTMAX_FUZZ_CORPUS="$WORK/fuzz-corpus"       # failures found here are reported, not added to the tree
cp -r "$ROOT/tests/fuzz/corpus/." "$WORK/fuzz-corpus/" 2>/dev/null || mkdir -p "$WORK/fuzz-corpus"
unset CSOFTMAX_REQUIRE_TORCH

check_logs() {
    local found=0
    for f in "$WORK"/logs/*; do
        [ -s "$f" ] || continue
        found=1
        echo "----- sanitizer report: $(basename "$f")"
        cat "$f"
    done
    return $found
}

step "the sanitized build imports, from the copy"
(cd "$WORK/src" && "$PY" -c "import csoftmax, sys; print(csoftmax.__file__); sys.exit(0 if csoftmax.__file__.startswith('$WORK/src/') else 'not the sanitized copy')")
check_logs || { echo "sanitizer report at import"; exit 1; }

step "torch under ASan"
TORCH=${SANITIZE_TORCH:-auto}
if [ "$TORCH" = auto ]; then
    if (cd "$WORK/src" && timeout 600 "$PY" -c "
import torch
torch.softmax(torch.ones(3), 0)
try:
    torch.softmax(torch.ones(3), 5)      # a C++ exception, translated to IndexError
except IndexError:
    pass") >/dev/null 2>&1 \
        && check_logs >/dev/null; then TORCH=1; else TORCH=0; fi
    rm -f "$WORK"/logs/*
fi
if [ "$TORCH" = 0 ]; then
    # a stand-in package that fails to import: pytest.importorskip("torch") skips the torch tests, nothing else
    mkdir -p "$WORK/no-torch/torch"
    echo 'raise ImportError("torch is blocked under the sanitizers (tools/sanitize.sh, SANITIZE_TORCH=0)")' \
        >"$WORK/no-torch/torch/__init__.py"
    export PYTHONPATH="$WORK/no-torch${PYTHONPATH:+:$PYTHONPATH}"
    echo "torch blocked: its tests will skip (SANITIZE_TORCH=1 to force them)"
else
    echo "torch imports under ASan: its tests run"
fi

step "test suite under ASan + UBSan"
if [ $# -gt 0 ]; then
    ARGS=("$@")
elif [ "${SANITIZE_SLOW:-0}" = 1 ]; then
    ARGS=(-ra)
else
    ARGS=(-ra -m "not slow")
fi
set +e
(cd "$WORK/src" && "$PY" -m pytest -p no:cacheprovider "${ARGS[@]}")
STATUS=$?
set -e

step "sanitizer reports"
REPORTS=0
check_logs || REPORTS=1
if [ $REPORTS = 1 ]; then
    echo "FAILED: sanitizer report(s) above (pytest exit status $STATUS)"
    exit 1
fi
echo "no sanitizer reports"
if [ $STATUS -ne 0 ]; then
    echo "FAILED: pytest exit status $STATUS"
    exit $STATUS
fi
echo "OK"
