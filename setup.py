"""Build of the C/Cython core. Compile flags stay at each architecture's baseline: the AVX2 and AVX-512 kernels enable
their instruction sets with target pragmas inside their own files and are chosen at run time (src/dispatch.c)."""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCES = ["csoftmax/_csoftmax.pyx"] + [
    f"csoftmax/src/{name}.c" for name in ("engine", "threads", "blocks", "dispatch", "kernels_baseline", "kernels_avx2", "kernels_avx512")
]

# -ffp-contract=off: no silent fused multiply-adds, so one kernel set gives the same bits wherever it runs.
# Never -ffast-math (inf/NaN semantics) nor -march=native (the wheel must run on any CPU of its architecture).
CFLAGS = ["-O3", "-std=gnu11", "-pthread", "-ffp-contract=off", "-fno-math-errno"]
CFLAGS += os.environ.get("CSOFTMAX_EXTRA_CFLAGS", "").split()   # e.g. sanitizers, see tools/

extension = Extension(
    "csoftmax._csoftmax",
    sources=SOURCES,
    include_dirs=[np.get_include(), "csoftmax/src"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    extra_compile_args=CFLAGS,
    extra_link_args=["-pthread"] + os.environ.get("CSOFTMAX_EXTRA_LDFLAGS", "").split(),
    depends=[f"csoftmax/src/{name}" for name in ("softmax.h", "threads.h", "blocks.h", "simd_vec.h", "kernels.inc", "kernels_type.inc")],
)

setup(ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}))
