#!/usr/bin/env bash
# Compiles csoftmax's C sources (csoftmax/src/*.c; not the Cython module, which needs the target's Python headers)
# for every platform a wheel is built for, with zig's clang and its bundled C libraries and SDK headers, so that a
# Linux machine proves the sources build for macOS and Windows too. Compile only: nothing is linked.
#
#   tools/cross_compile.sh                  # every target below
#   tools/cross_compile.sh x86_64-macos     # the named targets only
#   PYTHON=python3.12 JOBS=4 tools/cross_compile.sh
#
# The flags are setup.py's CFLAGS plus -Wall -Werror (and -g0): a pragma or attribute the compiler ignores (a target
# pragma clang does not honour, say) is a warning, so it fails the run instead of silently building baseline kernels.
# The objects are also disassembled: on x86-64 targets kernels_avx2 must hold ymm instructions, kernels_avx512 zmm
# instructions, and kernels_baseline neither; on aarch64 targets kernels_neon must hold fused multiply-adds and
# float16 conversions, and kernels_baseline no fused multiply-add. The disassembler is $DISASM if set, else llvm-objdump if there is one
# (it reads ELF, COFF and Mach-O), else binutils objdump, which reads ELF and COFF but not Mach-O: for an object no
# disassembler here can read, the same file is compiled again to assembly text (-S) and that text is checked.
#
# Prints one line per target; exits non-zero if any target fails (its compiler messages follow its line).
# zig comes from the `ziglang` PyPI package, installed with pip if `python -m ziglang version` fails.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(aarch64-macos x86_64-macos x86_64-windows-gnu aarch64-linux-gnu x86_64-linux-gnu)
# Enough to tell compiled kernels from a stray instruction: each file holds tens of thousands (tools/isa_check.py
# uses the same floor for a whole extension).
MIN_WIDE=1000

if ! "$PY" -m ziglang version >/dev/null 2>&1; then
    echo "installing zig (the ziglang package) with pip"
    "$PY" -m pip install -q ziglang || { echo "could not install ziglang"; exit 1; }
fi
echo "zig $("$PY" -m ziglang version)"

# setup.py's compile flags, read from its `CFLAGS = [...]` line (setup.py itself needs NumPy and Cython to import).
read -r -a CFLAGS < <("$PY" - "$ROOT/setup.py" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CFLAGS" for t in node.targets):
        print(" ".join(ast.literal_eval(node.value)))
        break
else:
    sys.exit("no CFLAGS = [...] list in setup.py")
EOF
)
[ ${#CFLAGS[@]} -gt 0 ] || { echo "could not read CFLAGS from setup.py"; exit 1; }
# -pthread names POSIX threads; the Windows build uses Win32 threads (csoftmax/src/os.h). -g0: zig cc adds debug
# information by default, which only makes the compiles slower here.
flags_for() {
    local flag
    for flag in "${CFLAGS[@]}" -Wall -Werror -g0; do
        [[ $1 == *windows* && $flag == -pthread ]] || printf '%s\n' "$flag"
    done
}

DISASM=${DISASM:-}                      # or the one named in the environment
[ -n "$DISASM" ] || for tool in llvm-objdump $(compgen -c llvm-objdump- | sort -t- -k3 -rn) objdump; do
    if command -v "$tool" >/dev/null; then DISASM=$tool; break; fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/csoftmax-cross.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SOURCES=("$ROOT"/csoftmax/src/*.c)

# Every (target, file) compile, JOBS at a time; each leaves its messages in a .log and, on failure, a .failed mark.
compile_one() {
    local target=$1 src=$2 out
    out="$WORK/$target/$(basename "$src" .c)"
    mapfile -t flags <"$WORK/$target/flags"
    "$PY" -m ziglang cc -target "$target" "${flags[@]}" -c "$src" -o "$out.o" >"$out.log" 2>&1 || touch "$out.failed"
}
export -f compile_one
export WORK PY
for target in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$target"
    flags_for "$target" >"$WORK/$target/flags"
    for src in "${SOURCES[@]}"; do printf '%s\n%s\n' "$target" "$src"; done
done | xargs -d '\n' -n 2 -P "$JOBS" bash -c 'compile_one "$@"' _

# Counts the instruction lines that match an extended regular expression (a register of one kind, '%ymm[0-9]'; an
# instruction, 'fmla') in the object of csoftmax/src/<name>.c for the target; prints the count and how the
# instructions were read, or nothing if neither way worked.
count_matches() {
    local target=$1 name=$2 pattern=$3 listing="$WORK/$1/$2.listing"
    if [ ! -e "$listing.how" ]; then
        if [ -n "$DISASM" ] && "$DISASM" -d --no-show-raw-insn "$WORK/$target/$name.o" >"$listing" 2>/dev/null; then
            echo "$DISASM" >"$listing.how"
        else
            mapfile -t flags <"$WORK/$target/flags"
            # (zig cc passes -c along with -S, which clang reports as unused)
            "$PY" -m ziglang cc -target "$target" "${flags[@]}" -Wno-unused-command-line-argument -S \
                "$ROOT/csoftmax/src/$name.c" -o "$listing" 2>/dev/null || return
            echo "assembly text" >"$listing.how"
        fi
    fi
    echo "$(grep -c -E "$pattern" "$listing") $(<"$listing.how")"
}

status=0
for target in "${TARGETS[@]}"; do
    failed=()
    for src in "${SOURCES[@]}"; do
        name=$(basename "$src" .c)
        [ -e "$WORK/$target/$name.failed" ] && failed+=("$name.c")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        printf '%-20s FAILED to compile: %s\n' "$target" "${failed[*]}"
        for name in "${failed[@]}"; do head -20 "$WORK/$target/${name%.c}.log"; done
        status=1
        continue
    fi
    line="${#SOURCES[@]} files compiled"
    problems=()
    if [[ $target == x86_64-* ]]; then
        read -r avx2 how < <(count_matches "$target" kernels_avx2 '%ymm[0-9]')
        read -r avx512 _ < <(count_matches "$target" kernels_avx512 '%zmm[0-9]')
        read -r base_ymm _ < <(count_matches "$target" kernels_baseline '%ymm[0-9]')
        read -r base_zmm _ < <(count_matches "$target" kernels_baseline '%zmm[0-9]')
        if [ -z "$avx2" ] || [ -z "$avx512" ] || [ -z "$base_ymm" ] || [ -z "$base_zmm" ]; then
            problems+=("could not read the objects' instructions")
        else
            [ "$avx2" -ge $MIN_WIDE ] || problems+=("kernels_avx2 has only $avx2 ymm instructions")
            [ "$avx512" -ge $MIN_WIDE ] || problems+=("kernels_avx512 has only $avx512 zmm instructions")
            [ $((base_ymm + base_zmm)) -eq 0 ] || problems+=("kernels_baseline uses ymm/zmm registers")
        fi
        line+=", kernels_avx2: $avx2 ymm, kernels_avx512: $avx512 zmm, kernels_baseline: none ($how)"
    elif [[ $target == aarch64-* ]]; then
        # (Mach-O listings put the arrangement after the mnemonic: fmla.4s, fcvtl.4s from halves, fcvtn.4h)
        read -r fma how < <(count_matches "$target" kernels_neon '\bfml[as](\.[0-9][a-z])?[[:space:]]')
        read -r f16 _ < <(count_matches "$target" kernels_neon '\bfcvt[ln](\.4s[[:space:]]|\.4h[[:space:]]|[[:space:]].*\.4h)')
        read -r base_fma _ < <(count_matches "$target" kernels_baseline '\bfml[as](\.[0-9][a-z])?[[:space:]]')
        if [ -z "$fma" ] || [ -z "$f16" ] || [ -z "$base_fma" ]; then
            problems+=("could not read the objects' instructions")
        else
            [ "$fma" -ge $MIN_WIDE ] || problems+=("kernels_neon has only $fma fused multiply-adds")
            [ "$f16" -ge 2 ] || problems+=("kernels_neon has no float16 vector conversions")
            [ "$base_fma" -eq 0 ] || problems+=("kernels_baseline has fused multiply-adds")
        fi
        line+=", kernels_neon: $fma fmla/fmls and $f16 float16 conversions, kernels_baseline: no fmla ($how)"
    fi
    if [ ${#problems[@]} -gt 0 ]; then
        printf '%-20s FAILED: %s\n' "$target" "$(IFS=';'; echo "${problems[*]}")"
        status=1
        continue
    fi
    printf '%-20s ok: %s\n' "$target" "$line"
done
exit $status
