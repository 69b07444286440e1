"""csoftmax: the fastest, most exact softmax for NumPy arrays on the CPU, with torch.nn.functional.softmax's
semantics."""

# Run from a source checkout (the repository root is on sys.path, as with `python -m pytest` or
# `python -m csoftmax` there), this folder has no compiled core. If an installed csoftmax exists, hand over to it,
# so the README's commands test and run what pip installed.
def _defer_to_installed_copy():
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if any(os.path.exists(os.path.join(here, "_csoftmax" + s)) for s in importlib.machinery.EXTENSION_SUFFIXES):
        return False
    parent = os.path.dirname(here)
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != parent]
    spec = importlib.machinery.PathFinder.find_spec(__name__, others)
    if spec is None or spec.origin is None or os.path.dirname(os.path.abspath(spec.origin)) == here:
        raise ImportError(
            "csoftmax is imported from its source folder, which has no compiled core, and no installed csoftmax "
            "was found: run `pip install .` (or `python setup.py build_ext --inplace` to work in place)"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    spec.loader.exec_module(module)
    return True


if _defer_to_installed_copy():
    pass  # sys.modules["csoftmax"] is now the installed package; this module object is discarded
else:
    from ._api import (LogSoftmax, Softmax, Softmax2d, Softmin, SoftmaxState, log_softmax, log_softmax_backward,
                       logsumexp, softmax, softmax_backward, softmin)
    from ._config import get_num_threads, set_num_threads, set_output_cache, show_config
    from ._version import __version__

    __all__ = ["softmax", "log_softmax", "softmin", "softmax_backward", "log_softmax_backward", "Softmax",
               "LogSoftmax", "Softmin", "Softmax2d", "show_config", "set_num_threads", "get_num_threads",
               "set_output_cache", "__version__", "logsumexp", "SoftmaxState"]
