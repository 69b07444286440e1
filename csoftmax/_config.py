"""Run-time configuration: which kernel set runs (chosen at import from the CPU's features, or forced lower by
CSOFTMAX_ISA), how many threads large calls use (CSOFTMAX_NUM_THREADS, set_num_threads, threadpoolctl) and how much
freed result memory is kept for reuse (CSOFTMAX_OUTPUT_CACHE, set_output_cache)."""
from __future__ import annotations

import os
import warnings

from . import _csoftmax
from ._version import __version__

__all__ = ["show_config", "config", "use_kernels", "set_num_threads", "get_num_threads", "set_output_cache"]

ISA_VARIABLE = "CSOFTMAX_ISA"
THREADS_VARIABLE = "CSOFTMAX_NUM_THREADS"
CACHE_VARIABLE = "CSOFTMAX_OUTPUT_CACHE"


def get_num_threads() -> int:
    """Threads csoftmax uses for large arrays (default: the CPUs this process may use, from its affinity mask and
    cgroup quota). Results are bit-identical whatever the thread count."""
    return _csoftmax.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads csoftmax uses for large arrays (small calls always run on the calling thread): n >= 1, else
    a ValueError; counts above 257 (the calling thread and the pool's 256 workers, all it runs) mean 257."""
    _csoftmax.set_num_threads(n)


def set_output_cache(max_bytes: int) -> int:
    """Set how many bytes of freed results (256 KiB or bigger) csoftmax keeps mapped to hand out again for results of
    the same size; returns the previous limit. Default 256 MiB (at most 8 buffers); 0 keeps nothing and releases
    what is kept now; a negative count is a ValueError, and counts beyond 2**64 - 1 mean 2**64 - 1. A fresh big
    array costs a page fault per page (the OS zeroes it first): reusing one saves that, and lets two Python threads
    calling softmax run in parallel."""
    previous = _csoftmax.output_cache_limit()
    _csoftmax.set_output_cache_limit(max_bytes)
    return previous


def use_kernels(name: str) -> None:
    """Make the named kernel set (see ``config()["available"]``) the active one for this process."""
    _csoftmax.use_kernels(name)


def config() -> dict:
    """The build and dispatch facts that show_config prints, as a dict."""
    return {
        "version": __version__,
        "cpu": _csoftmax.cpu_features(),
        "available": _csoftmax.available_kernels(),
        "active": _csoftmax.active_kernels(),
        "descriptions": {name: _csoftmax.kernel_description(name) for name in _csoftmax.available_kernels()},
        "forced_by": os.environ.get(ISA_VARIABLE) or None,
        "num_threads": _csoftmax.get_num_threads(),
        "default_num_threads": _csoftmax.default_num_threads(),
        "output_cache_limit": _csoftmax.output_cache_limit(),
        "output_cache_bytes": _csoftmax.output_cache_bytes(),
    }


def show_config() -> None:
    """Print which kernel sets this CPU can run and which one is in use."""
    c = config()
    print(f"csoftmax {c['version']}")
    print(f"CPU: {c['cpu']}")
    for name in c["available"]:
        mark = "*" if name == c["active"] else " "
        print(f" {mark} {name:9s} {c['descriptions'][name]}")
    if c["forced_by"]:
        print(f"(active kernel set forced by {ISA_VARIABLE}={c['forced_by']})")
    print(f"threads: {c['num_threads']} (this process may use {c['default_num_threads']} CPUs)")
    print(f"result buffers kept for reuse: {c['output_cache_bytes'] / 2**20:.1f} MiB "
          f"(limit {c['output_cache_limit'] / 2**20:.0f} MiB, {CACHE_VARIABLE})")


def _apply_environment() -> None:
    """Applies the variables read at import. A value that cannot be used is a RuntimeWarning naming its variable,
    and leaves the default: importing csoftmax never fails because of the environment."""
    # CSOFTMAX_NUM_THREADS, else OMP_NUM_THREADS (which Dask's workers, joblib and others set to keep nested
    # parallelism from oversubscribing the cores; a list such as "4,2" gives a count per nesting level, and a
    # csoftmax call is the outer one), else the CPUs this process may use
    variable = THREADS_VARIABLE if os.environ.get(THREADS_VARIABLE, "").strip() else "OMP_NUM_THREADS"
    value = os.environ.get(variable, "")
    first = value.split(",")[0] if variable == "OMP_NUM_THREADS" else value
    _apply_count(variable, value, first, 1, set_num_threads,
                 lambda: f"is not a positive integer; using {_csoftmax.get_num_threads()} threads")
    cache = os.environ.get(CACHE_VARIABLE, "")
    _apply_count(CACHE_VARIABLE, cache, cache, 0, set_output_cache,
                 lambda: f"is not a byte count >= 0; keeping {_csoftmax.output_cache_limit()} bytes")
    name = os.environ.get(ISA_VARIABLE, "").strip()
    if not name:
        return
    if name.lower() not in _csoftmax.available_kernels():
        _warn(f"{ISA_VARIABLE}={name!r} is not available on this CPU (available: {_csoftmax.available_kernels()}); "
              f"using {_csoftmax.active_kernels()!r}")
        return
    _csoftmax.use_kernels(name.lower())


def _apply_count(variable: str, value: str, text: str, low: int, apply, complaint) -> None:
    """apply(the integer text spells) when it is >= low; nothing for blank text; else a warning quoting the
    variable's whole value and complaint()"""
    if not text.strip():
        return
    try:
        count = int(text)
    except ValueError:
        count = None
    if count is None or count < low:
        _warn(f"{variable}={value!r} {complaint()}", stacklevel=4)
    else:
        apply(count)


def _warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def _register_threadpoolctl() -> None:
    """Let threadpoolctl see and limit csoftmax's pool (threadpool_info, threadpool_limits), when installed."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register") or any(
        getattr(c, "internal_api", None) == "csoftmax" for c in getattr(threadpoolctl, "_ALL_CONTROLLERS", [])
    ):
        return

    class CsoftmaxController(threadpoolctl.LibController):
        user_api = "csoftmax"
        internal_api = "csoftmax"
        filename_prefixes = ("_csoftmax",)     # the extension module's file name

        def get_num_threads(self):
            return self.dynlib.csm_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.csm_set_num_threads(int(num_threads))

        def get_version(self):
            return __version__

    threadpoolctl.register(CsoftmaxController)


_apply_environment()
_register_threadpoolctl()
