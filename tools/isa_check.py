"""Checks that a built extension really carries its per-instruction-set kernels.

The AVX2 and AVX-512 kernel files enable their instruction sets for themselves (compiler.h's CSM_TARGET_BEGIN); a
compiler that ignored that would build them for the baseline, and every test would still pass on the baseline code
under another name. The disassembly tells: outside those two files nothing may use 256- or 512-bit registers (the
global flags are the baseline's), so the extension must hold many ymm instructions with fused multiply-adds (the
AVX2 set) and many zmm instructions (the AVX-512 set).

    python tools/isa_check.py path/to/_csoftmax.*.so      (x86-64; needs objdump from binutils)
"""
import re
import subprocess
import sys

NEEDED = {"ymm registers": 1000, "zmm registers": 1000, "fused multiply-adds": 500}


def counts(path):
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True, capture_output=True,
                          text=True).stdout
    return {"ymm registers": len(re.findall(r"%ymm\d", text)), "zmm registers": len(re.findall(r"%zmm\d", text)),
            "fused multiply-adds": len(re.findall(r"\bvfn?m(add|sub)\d{3}[ps][sd]\b", text))}


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    found = counts(argv[1])
    short = [f"{what}: {found[what]} < {least}" for what, least in NEEDED.items() if found[what] < least]
    print(f"{argv[1]}: " + ", ".join(f"{n} {what}" for what, n in found.items()))
    if short:
        sys.exit("the AVX2 / AVX-512 kernels were not built for their instruction sets: " + "; ".join(short))


if __name__ == "__main__":
    main(sys.argv)
