"""Which kernel set runs: chosen once at import from the CPU's features, or forced lower by CSOFTMAX_ISA."""
from __future__ import annotations

import os
import warnings

from . import _core
from ._version import __version__

__all__ = ["show_config", "config", "use_kernels"]

ISA_VARIABLE = "CSOFTMAX_ISA"


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


def _apply_environment() -> None:
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


_apply_environment()
