"""Run-time configuration: which kernel set runs (chosen at import from the CPU's features, or forced lower by
CSOFTMAX_ISA) and how many threads large calls use (CSOFTMAX_NUM_THREADS, set_num_threads, threadpoolctl)."""
from __future__ import annotations

import os
import warnings

from . import _core
from ._version import __version__

__all__ = ["show_config", "config", "use_kernels", "set_num_threads", "get_num_threads"]

ISA_VARIABLE = "CSOFTMAX_ISA"
THREADS_VARIABLE = "CSOFTMAX_NUM_THREADS"


def get_num_threads() -> int:
    """Threads csoftmax uses for large arrays (default: the CPUs this process may use, from its affinity mask and
    cgroup quota). Results are bit-identical whatever the thread count."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads csoftmax uses for large arrays (small calls always run on the calling thread)."""
    import operator

    _core.set_num_threads(operator.index(n))


def use_kernels(name: str) -> None:
    """Make the named kernel set (see ``config()["available"]``) the active one for this process."""
    _core.use_kernels(name)


def config() -> dict:
    """The build and dispatch facts that show_config prints, as a dict."""
    return {
        "version": __version__,
        "cpu": _core.cpu_features(),
        "available": _core.available_kernels(),
        "active": _core.active_kernels(),
        "descriptions": {name: _core.kernel_description(name) for name in _core.available_kernels()},
        "forced_by": os.environ.get(ISA_VARIABLE) or None,
        "num_threads": _core.get_num_threads(),
        "default_num_threads": _core.default_num_threads(),
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


def _apply_environment() -> None:
    # CSOFTMAX_NUM_THREADS, else OMP_NUM_THREADS (which Dask's workers, joblib and others set to keep nested
    # parallelism from oversubscribing the cores), else the CPUs this process may use
    threads = os.environ.get(THREADS_VARIABLE)
    if not threads and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = os.environ["OMP_NUM_THREADS"].strip()
    if threads:
        try:
            _core.set_num_threads(int(threads))
        except ValueError:
            warnings.warn(
                f"{THREADS_VARIABLE}={threads!r} is not a positive integer; using {_core.get_num_threads()} threads",
                RuntimeWarning,
                stacklevel=2,
            )
    name = os.environ.get(ISA_VARIABLE)
    if not name:
        return
    if name not in _core.available_kernels():
        warnings.warn(
            f"{ISA_VARIABLE}={name!r} is not available on this CPU (available: {_core.available_kernels()}); "
            f"using {_core.active_kernels()!r}",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    _core.use_kernels(name)


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
