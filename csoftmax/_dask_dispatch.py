"""The hook by which csoftmax's public functions hand a Dask array to csoftmax.dask.

It lives apart from csoftmax.dask because that module imports Dask, which the core package never does: Dask is
imported here only when the input's type comes from it (so Dask is installed).
"""
from typing import Any


def dispatch(name: str, input: Any, *args: Any, **kwargs: Any) -> Any:
    """The lazy ``csoftmax.dask.<name>(input, *args, **kwargs)`` for a Dask input, NotImplemented otherwise."""
    if not type(input).__module__.startswith("dask"):
        return NotImplemented
    from .dask import dispatch as lazy

    return lazy(name, input, *args, **kwargs)
