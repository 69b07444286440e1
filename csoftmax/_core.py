"""The compiled bridge under its working name (the extension is _csoftmax: a file name that threadpoolctl can
tell apart from other packages' "_core" modules)."""
from ._csoftmax import *  # noqa: F401,F403
from ._csoftmax import __doc__  # noqa: F401
