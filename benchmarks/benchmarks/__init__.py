"""asv benchmarks of csoftmax (run them with asv, see benchmarks/README.md).

Which csoftmax gets benchmarked: asv sets ASV_ENV_TYPE in the benchmark processes. In an "existing"
environment (the configured default, and `asv run --python=same`) nothing was installed for the run, so the
repository root goes first on sys.path: csoftmax/__init__.py then uses the in-place build of the working tree
(`python setup.py build_ext --inplace`), or hands over to a pip-installed copy when there is none. In a
virtualenv/conda environment asv has installed the very commit under test, so sys.path is left alone; putting
the working tree first would benchmark the wrong code.
"""
import os
import sys

if os.environ.get("ASV_ENV_TYPE", "existing") == "existing":
    _REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)
