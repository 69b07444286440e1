"""What a release promises besides the numbers: type information next to the compiled module, a stub that matches
it, the license in the installed metadata, an extension without debug information, linked to libm.

The checks of an installed distribution skip when csoftmax is imported from an in-place build (its build flags are
the developer's: tools/sanitize.sh builds with -g on purpose) or from an editable install."""
import ast
import importlib.metadata
import inspect
import os
import platform
import sys
import types

import pytest

import csoftmax
from csoftmax import _csoftmax

EXTENSION = os.path.realpath(_csoftmax.__file__)
HERE = os.path.dirname(EXTENSION)

# Release builds (setup.py: -g0) measured 2.4 MB on x86-64 (three kernel sets); with debug information the same
# extension is 18 MB. (The wheel compresses it to about 1 MB.)
MAX_EXTENSION_BYTES = 4 * 2**20


def _installed_distribution():
    """The installed distribution that csoftmax was imported from, or None."""
    try:
        dist = importlib.metadata.distribution("csoftmax")
    except importlib.metadata.PackageNotFoundError:
        return None
    files = {os.path.realpath(dist.locate_file(f)) for f in dist.files or ()}
    return dist if EXTENSION in files else None


def _require_installed():
    dist = _installed_distribution()
    if dist is None:
        pytest.skip(f"csoftmax is imported from a build in a source tree ({HERE}), not from an installed "
                    "distribution: its metadata and build flags are not the release's")
    return dist


def _stub():
    with open(os.path.join(HERE, "_csoftmax.pyi"), encoding="utf-8") as f:
        return ast.parse(f.read())


def _stub_functions():
    return {node.name: node for node in _stub().body if isinstance(node, ast.FunctionDef)}


def _stub_names():
    names = set(_stub_functions())
    for node in _stub().body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def _public_names():
    """The compiled module's own public names (not the modules it imports)."""
    return {name for name, value in vars(_csoftmax).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)}


def test_type_information_ships_next_to_the_compiled_module():
    assert os.path.isfile(os.path.join(HERE, "py.typed"))
    assert os.path.isfile(os.path.join(HERE, "_csoftmax.pyi"))


def test_stub_lists_every_public_name_of_the_compiled_module_and_no_other():
    public, stub = _public_names(), _stub_names()
    assert public - stub == set(), "missing from csoftmax/_csoftmax.pyi"
    assert stub - public == set(), "in csoftmax/_csoftmax.pyi but not in the compiled module"


def test_stub_signatures_have_the_compiled_functions_parameters():
    """Names, kinds and which parameters have defaults, as inspect sees the Cython functions."""
    for name, node in _stub_functions().items():
        if name.startswith("_"):
            continue
        runtime = inspect.signature(getattr(_csoftmax, name))
        args = node.args
        stub = [(a.arg, "positional", i >= len(args.args) - len(args.defaults)) for i, a in enumerate(args.args)]
        stub += [(a.arg, "keyword", d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
        actual = [(p.name, "keyword" if p.kind is p.KEYWORD_ONLY else "positional", p.default is not p.empty)
                  for p in runtime.parameters.values()]
        assert stub == actual, name


def test_every_public_function_is_defined_in_the_policy_layer():
    """One Python layer: each public function and class comes from csoftmax._api, the extension defines none of
    them and has one name (no _core alias module)."""
    import importlib.util

    for name in ("softmax", "log_softmax", "softmin", "softmax_backward", "log_softmax_backward", "Softmax",
                 "LogSoftmax", "Softmin", "Softmax2d", "logsumexp", "SoftmaxState"):
        assert getattr(csoftmax, name).__module__ == "csoftmax._api", name
        assert not hasattr(_csoftmax, name), name
    assert importlib.util.find_spec("csoftmax._core") is None


def test_op_codes_and_limits_are_the_c_headers_values():
    """The extension's op codes and limits come from src/softmax.h (the .pxd declares names only): compared with the
    header's text, so a Python-side copy that drifts from C fails here."""
    import re

    header = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csoftmax", "src", "softmax.h")
    if not os.path.isfile(header):
        header = os.path.join(HERE, "src", "softmax.h")
    if not os.path.isfile(header):
        pytest.skip("no src/softmax.h next to the tests or the extension")
    with open(header, encoding="utf-8") as f:
        text = f.read()
    for op, c_name in (("OP_SOFTMAX", "CSM_SOFTMAX"), ("OP_LOG_SOFTMAX", "CSM_LOG_SOFTMAX"),
                       ("OP_SOFTMAX_BACKWARD", "CSM_SOFTMAX_BACKWARD"),
                       ("OP_LOG_SOFTMAX_BACKWARD", "CSM_LOG_SOFTMAX_BACKWARD")):
        assert getattr(_csoftmax, op) == int(re.search(rf"\b{c_name} = (\d+)", text).group(1)), op
    assert _csoftmax.CSM_SHORT_ROW_MAX == int(re.search(r"#define CSM_SHORT_ROW_MAX (\d+)", text).group(1))
    assert _csoftmax.CSM_NEAR_LIMIT == float(re.search(r"#define CSM_NEAR_LIMIT \(([-0-9.]+)\)", text).group(1))
    assert _csoftmax.MAX_THREADS == int(re.search(r"#define CSM_MAX_WORKERS (\d+)", text).group(1)) + 1


def test_installed_distribution_carries_the_license():
    dist = _require_installed()
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    licenses = [f for f in dist.files if os.path.basename(str(f)) == "LICENSE"]
    assert licenses, "no LICENSE file in the installed distribution"
    text = licenses[0].read_text(encoding="utf-8")
    assert "BSD 3-Clause" in text and "the csoftmax developers" in text


def test_installed_extension_has_no_debug_information():
    _require_installed()
    size = os.path.getsize(EXTENSION)
    assert size < MAX_EXTENSION_BYTES, f"{EXTENSION} is {size} bytes: built with debug information?"
    with open(EXTENSION, "rb") as f:
        image = f.read()
    if image[:4] == b"\x7fELF":
        # the section name table holds ".debug_info" only when that section exists
        assert b".debug_info" not in image, f"{EXTENSION} has debug information (CSOFTMAX_EXTRA_CFLAGS=-g?)"


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="libm is a library of its own on glibc only (musl's and macOS's are in libc)")
def test_extension_is_linked_to_libm():
    """The kernels call exp and log1p from libm; without the link, they resolved only because the interpreter
    happened to load libm first."""
    with open(EXTENSION, "rb") as f:
        assert b"libm.so.6\0" in f.read()        # a DT_NEEDED entry's name in the dynamic string table


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc symbol versions")
def test_extension_needs_no_glibc_newer_than_its_wheel_promises():
    """manylinux_2_28: every versioned symbol the extension needs from glibc (its version names sit in the dynamic
    string table) is at most GLIBC_2.28; exp and expf are bound to their first versions (compiler.h) in every file
    that calls them."""
    import re

    with open(EXTENSION, "rb") as f:
        versions = {int(v) for v in re.findall(rb"GLIBC_2\.(\d+)", f.read())}
    assert versions and max(versions) <= 28, sorted(versions)


def test_version_of_the_installed_metadata_is_the_package_version():
    dist = _require_installed()
    assert dist.version == csoftmax.__version__
