"""Build of the C/Cython core. Compile flags stay at each architecture's baseline: the AVX2 and AVX-512 kernels enable
their instruction sets with target pragmas inside their own files and are chosen at run time (src/dispatch.c).

Supported: GCC or clang on Linux (glibc and musl; x86-64 and aarch64) and macOS (x86-64 and arm64; untested here).
Not supported yet: Windows. The C sources compile for x86_64-windows-gnu (src/os.h has the Win32 side of threads,
page mapping and CPU counts; tools/cross_compile.sh checks it), but the kernels are GNU C (vector extensions, see
src/compiler.h), which MSVC does not compile, and setuptools picks MSVC on Windows whatever CC says: a Windows
build needs a clang-cl or MinGW toolchain and its flags here.

Release builds carry no debug information (-g0 after Python's own -g): the extension is about a tenth of its size
with it. CSOFTMAX_EXTRA_CFLAGS / CSOFTMAX_EXTRA_LDFLAGS come last, so tools/sanitize.sh and tools/valgrind.sh
turn -g back on for their builds."""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["csoftmax/_csoftmax.pyx"] + [
    f"csoftmax/src/{name}.c" for name in ("engine", "threads", "blocks", "dispatch", "kernels_baseline", "kernels_avx2", "kernels_avx512",
                                                                       "kernels_neon")
]

# -ffp-contract=off: no silent fused multiply-adds, so one kernel set gives the same bits wherever it runs.
# Never -ffast-math (inf/NaN semantics) nor -march=native (the wheel must run on any CPU of its architecture).
CFLAGS = ["-O3", "-std=gnu11", "-pthread", "-ffp-contract=off", "-fno-math-errno", "-g0"]
CFLAGS += os.environ.get("CSOFTMAX_EXTRA_CFLAGS", "").split()   # e.g. sanitizers, see tools/


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError("csoftmax needs GCC or clang on Linux or macOS: its C sources use GNU C vector "
                               "extensions and POSIX threads, which MSVC does not build (see setup.py)")
        super().build_extensions()


extension = Extension(
    "csoftmax._csoftmax",
    sources=SOURCES,
    include_dirs=[np.get_include(), "csoftmax/src"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    extra_compile_args=CFLAGS,
    extra_link_args=["-pthread"] + os.environ.get("CSOFTMAX_EXTRA_LDFLAGS", "").split(),
    libraries=[] if sys.platform == "win32" else ["m"],   # exp/log1p fall back to libm (kernels.inc)
    depends=[f"csoftmax/src/{name}" for name in ("softmax.h", "threads.h", "blocks.h", "simd_vec.h", "compiler.h", "os.h",
                                                  "kernels.inc", "kernels_type.inc", "transpose_x86.h", "short_rows_x86.inc")],
)

setup(ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}), cmdclass={"build_ext": BuildExt})
