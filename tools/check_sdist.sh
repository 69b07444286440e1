#!/usr/bin/env bash
# Checks that a source distribution is complete: unpacks it into a temporary directory, installs it with its test
# extra into a fresh virtual environment (pip builds the extension from the sdist alone), and runs the test suite
# that the sdist carries, from inside the unpacked tree, against the installed package.
#
#   tools/check_sdist.sh dist/csoftmax-0.1.0.tar.gz          # the fast suite
#   tools/check_sdist.sh SDIST --slow                         # arguments after the sdist go to pytest
#   PYTHON=python3.12 tools/check_sdist.sh SDIST              # the interpreter for the virtual environment
#   CHECK_SDIST_KEEP=1 tools/check_sdist.sh SDIST             # keep the temporary directory
#
# From inside the unpacked tree, `import csoftmax` first finds the tree's own csoftmax/ (the current directory is
# on sys.path), which has no compiled core and hands over to the installed copy (csoftmax/__init__.py); the
# script checks that the tests did get the installed copy.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SDIST [pytest arguments]"; exit 2; }
SDIST=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
[ -f "$SDIST" ] || { echo "no such file: $SDIST"; exit 2; }
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/csoftmax-sdist.XXXXXX")
cleanup() { if [ "${CHECK_SDIST_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "unpack $(basename "$SDIST")"
mkdir "$WORK/unpacked"
tar -xzf "$SDIST" -C "$WORK/unpacked"
TREE=$(ls -d "$WORK"/unpacked/*/)
TREE=${TREE%/}
for f in LICENSE CHANGELOG.md README.md tests/conftest.py tests/_helpers.py tests/fuzz/test_fuzz.py docs/design.md \
         tools/check_sdist.sh benchmarks/compare.py; do
    [ -e "$TREE/$f" ] || { echo "the sdist lacks $f"; exit 1; }
done
ls "$TREE"/tests/fuzz/corpus/*.npz >/dev/null 2>&1 || { echo "the sdist lacks the fuzz corpus (tests/fuzz/corpus/*.npz)"; exit 1; }
echo "$TREE: $(find "$TREE" -type f | wc -l) files, $(ls "$TREE"/tests/fuzz/corpus/*.npz | wc -l) corpus cases"

step "install from the sdist, with the test extra, into a fresh environment"
"$PY" -m venv "$WORK/env"
"$WORK/env/bin/pip" install -q --upgrade pip
"$WORK/env/bin/pip" install -q "$TREE[test]"

step "the sdist's test suite against the installed package"
cd "$TREE"
"$WORK/env/bin/python" -c "
import csoftmax, csoftmax._csoftmax as core, sys
print('csoftmax', csoftmax.__version__, 'from', csoftmax.__file__)
print('extension', core.__file__)
sys.exit('csoftmax was imported from the unpacked tree, not the installed package'
         if core.__file__.startswith('$TREE/') or csoftmax.__file__.startswith('$TREE/') else 0)"
"$WORK/env/bin/python" -m pytest -q -p no:cacheprovider "$@"
