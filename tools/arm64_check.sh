#!/usr/bin/env bash
# Builds csoftmax for aarch64 on an x86-64 Linux machine and runs tests on it under qemu-user: the NEON kernel set
# must be the one chosen, and the tests run on it (below).
#
#   tools/arm64_check.sh                                  # the layout, accuracy and row-state tests (below)
#   tools/arm64_check.sh tests/test_family.py -k where    # other tests (arguments go to pytest)
#   PYTHON=python3.12 KEEP=/tmp/arm64 tools/arm64_check.sh   # KEEP: reuse / keep the work folder
#
# Nothing is installed on the machine itself but the tools below (when missing, and only as root):
#   - an arm64 Debian root with Python and its headers, unpacked by mmdebstrap without running any of its package
#     scripts (--variant=extract), so that no program of the root runs before the tests;
#   - NumPy, pytest and hypothesis as aarch64 wheels from PyPI (pip --platform), beside the root;
#   - the extension compiled by Debian's cross compiler (gcc-aarch64-linux-gnu) through setup.py, with setup.py's
#     own flags, against the root's Python headers;
#   - qemu-user runs the root's python3 with the root as its library prefix (-L), so no binfmt registration or
#     chroot is needed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TESTS=("$@")
# By default the layout, accuracy and row-state tests on the NEON set (the tests that compare the sets still run
# both). The aarch64 baseline is x86-64's baseline source, which runs them natively and on an emulated CPU; its
# runs here would add about 6 minutes to the NEON set's 11 under qemu.
[ ${#TESTS[@]} -gt 0 ] || TESTS=(tests/test_layouts.py tests/test_accuracy.py tests/test_rows.py -k "not baseline")
if [ -n "${KEEP:-}" ]; then WORK=$KEEP; mkdir -p "$WORK"; else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/csoftmax-arm64.XXXXXX"); trap 'rm -rf "$WORK"' EXIT
fi

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing: ${need[*]} (install them, or run as root)"; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64)

R=$WORK/root
if [ ! -x "$R/usr/bin/python3" ]; then
    echo "arm64 Debian $SUITE root (python3 and its headers) in $R"
    mmdebstrap --quiet --variant=extract --architectures=arm64 --include=python3,libpython3-dev "$SUITE" "$R" "$MIRROR"
fi
run() { "$QEMU" -L "$R" "$R/usr/bin/python3" "$@"; }
read -r PYVER EXT_SUFFIX < <(run -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], sysconfig.get_config_var("EXT_SUFFIX"))')
echo "emulated: $(run -c 'import platform, sys; print(platform.machine(), "Python", sys.version.split()[0])')"

SITE=$WORK/site
if [ ! -d "$SITE/numpy" ]; then
    "$PY" -m pip install -q --target "$SITE" --platform manylinux2014_aarch64 --python-version "$PYVER" \
        --implementation cp --only-binary=:all: numpy pytest hypothesis
fi

# setup.py runs on this machine (Cython and the NumPy headers are the host's, both architecture-neutral) in a copy of
# the sources, so that nothing is written into the checkout; CC and LDSHARED replace the host's compiler, and the
# root's Python headers come before the host's (its pyconfig.h includes the multiarch one from the root's
# /usr/include, searched after the cross compiler's own headers).
rm -rf "$WORK/src" "$WORK/lib"
mkdir -p "$WORK/src"
cp -r "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/LICENSE" "$ROOT/csoftmax" "$WORK/src/"
find "$WORK/src/csoftmax" \( -name '*.so' -o -name '_csoftmax.c' -o -name __pycache__ \) -prune -exec rm -rf {} +
PYINC=$R/usr/include/aarch64-linux-gnu/python$PYVER:$R/usr/include/python$PYVER
(
    cd "$WORK/src"
    CC=aarch64-linux-gnu-gcc LDSHARED="aarch64-linux-gnu-gcc -shared -pthread" CFLAGS="-idirafter $R/usr/include" \
        "$PY" setup.py -q build_py -d "$WORK/lib" build_ext -b "$WORK/lib" -t "$WORK/tmp" -I "$PYINC" >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log"; exit 1; }
)
so=("$WORK"/lib/csoftmax/_csoftmax*.so)
mv "${so[0]}" "$WORK/lib/csoftmax/_csoftmax$EXT_SUFFIX"
echo "built: $(file -b "$WORK/lib/csoftmax/_csoftmax$EXT_SUFFIX" | cut -d, -f1-2)"

# The tests run from a folder that holds only them and the pytest configuration, so that `import csoftmax` finds
# the aarch64 build, never the checkout's sources.
rm -rf "$WORK/run"
mkdir -p "$WORK/run"
cp -r "$ROOT/tests" "$ROOT/pyproject.toml" "$WORK/run/"
cd "$WORK/run"
export PYTHONPATH=$WORK/lib:$SITE PYTHONDONTWRITEBYTECODE=1
run -c "import csoftmax._csoftmax as c; a = c.active_kernels(); print('kernel sets:', c.available_kernels(), '->', a); assert a == 'neon', a"
run -m pytest -q -p no:cacheprovider "${TESTS[@]}"
