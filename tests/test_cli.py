"""`python -m csoftmax`: applying softmax to a .npy file, and every way that can go wrong reported in one line on
stderr with exit status 2 (as argparse reports a bad option), never a traceback."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import csoftmax
import csoftmax.__main__ as cli

# Child interpreters import the same csoftmax as this one (installed wheel, or an in-place build).
CHILD_ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(csoftmax.__file__)))


@pytest.fixture
def no_report(monkeypatch):
    """Replaces the self-check and timing table (what a call without an input runs) by a recorder."""
    calls = []
    monkeypatch.setattr(cli, "_report", lambda: calls.append("report") or 0)
    return calls


def _error_line(capsys):
    """The one line main() wrote to stderr."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_file_is_written_with_softmax_of_the_input(tmp_path):
    x = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "in.npy", x)
    assert cli.main([str(tmp_path / "in.npy"), "--dim", "0", "-o", str(tmp_path / "out.npy")]) == 0
    e = np.exp(x - x.max(axis=0))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), e / e.sum(axis=0), rtol=1e-14)


def test_an_empty_input_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "in.npy").write_bytes(b"")
    assert cli.main([str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy")]) == 2
    assert _error_line(capsys) == f"csoftmax: error: {tmp_path / 'in.npy'} is empty, not a .npy file\n"
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("content", [b"1.0 2.0 3.0\n", b"\x93NUM"])
def test_a_file_that_is_not_npy_is_reported_as_such(tmp_path, capsys, content):
    (tmp_path / "in.txt").write_bytes(content)
    assert cli.main([str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy")]) == 2
    assert _error_line(capsys) == f"csoftmax: error: {tmp_path / 'in.txt'} is not a .npy file\n"


def test_an_npz_archive_is_reported_as_such(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", a=np.ones(3))
    assert cli.main([str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npy")]) == 2
    expected = f"csoftmax: error: {tmp_path / 'in.npz'} is an .npz archive, not a single .npy array\n"
    assert _error_line(capsys) == expected


def test_the_output_file_mode_follows_the_umask_as_np_save_does(tmp_path):
    np.save(tmp_path / "in.npy", np.ones(3))
    previous = os.umask(0o027)
    try:
        np.save(tmp_path / "by_numpy.npy", np.ones(3))
        assert cli.main([str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy")]) == 0
    finally:
        os.umask(previous)
    expected = os.stat(tmp_path / "by_numpy.npy").st_mode
    assert expected & 0o777 == 0o640
    assert os.stat(tmp_path / "out.npy").st_mode == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses RLIMIT_FSIZE as a full disk")
def test_a_failed_write_gives_the_systems_reason_and_leaves_nothing_behind(tmp_path):
    # a file size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC
    import resource
    import signal

    np.save(tmp_path / "in.npy", np.ones((256, 1024)))           # 2 MiB of result

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)            # (else the signal ends the process)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "out.npy"
    proc = subprocess.run([sys.executable, "-m", "csoftmax", str(tmp_path / "in.npy"), "-o", str(out)],
                          preexec_fn=small_files_only, capture_output=True, text=True, env=CHILD_ENV, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"csoftmax: error: cannot write {out}: {os.strerror(errno.EFBIG)}\n"
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


@pytest.mark.parametrize("argv", [["--dim", "0", "-o", "x.npy"], ["-o", "x.npy"], ["--dim", "1"]])
def test_options_that_need_an_input_without_one_are_a_usage_error(argv, no_report, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "need an input file" in capsys.readouterr().err
    assert no_report == []


def test_no_arguments_runs_the_report(no_report):
    assert cli.main([]) == 0
    assert no_report == ["report"]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"csoftmax {csoftmax.__version__}\n"


@pytest.mark.parametrize("make, args, message", [
    (None, ["--dim", "0"], "no such file: {in_path}"),
    ("floats", ["--dim", "zero"], "--dim must be an integer, not 'zero'"),
    ("floats", ["--dim", "2"], "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("ints", ["--dim", "0"], "{in_path} holds int64 values; a float16, float32 or float64 array is needed"),
    ("floats", ["--dim", "0", "-o", None], "missing -o OUT.npy (where to write the result)"),
    ("floats", ["--dim", "0", "-o", "{tmp}/no/such/folder/out.npy"], "cannot write to {tmp}/no/such/folder: "
     "No such file or directory"),
])
def test_every_usage_error_is_one_line_exit_2_and_leaves_the_output_alone(tmp_path, capsys, make, args, message):
    in_path = tmp_path / "in.npy"
    if make == "floats":
        np.save(in_path, np.arange(6.0).reshape(2, 3))
    elif make == "ints":
        np.save(in_path, np.arange(6).reshape(2, 3))
    out = tmp_path / "out.npy"
    out.write_bytes(b"the previous result")
    if "-o" not in args:
        args = args + ["-o", str(out)]
    elif args[-1] is None:
        args = args[:-2]
    else:
        args = args[:-1] + [args[-1].format(tmp=tmp_path)]
    assert cli.main([str(in_path)] + args) == 2
    expected = message.format(in_path=in_path, tmp=tmp_path)
    assert _error_line(capsys) == f"csoftmax: error: {expected}\n"
    assert out.read_bytes() == b"the previous result"                    # whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"out.npy"} | ({"in.npy"} if make else set()))


def test_the_command_line_process_exits_2_with_one_line(tmp_path):
    np.save(tmp_path / "in.npy", np.ones((2, 3), np.float32))
    proc = subprocess.run([sys.executable, "-m", "csoftmax", str(tmp_path / "in.npy"), "--dim", "7", "-o",
                           str(tmp_path / "out.npy")], capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("csoftmax: error: Dimension out of range") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "out.npy").exists()


def test_a_result_replaces_an_existing_output_file_whole(tmp_path):
    x = np.random.default_rng(5).standard_normal((4, 5)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    (tmp_path / "out.npy").write_bytes(b"x" * 100_000)                  # longer than the new file
    assert cli.main([str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy")]) == 0
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == np.float32 and np.array_equal(got, csoftmax.softmax(x, -1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]


def test_the_self_check_passes_here_and_fails_when_softmax_is_wrong(monkeypatch, capsys):
    assert cli._self_check() is True
    assert "cases agree" in capsys.readouterr().out
    monkeypatch.setattr(cli, "_timing_table", lambda: None)
    assert cli._report() == 0
    real = csoftmax.softmax
    monkeypatch.setattr(csoftmax, "softmax", lambda x, dim: real(x, dim) * np.float16(1.01))
    assert cli._self_check() is False
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "float32" in out
    assert cli._report() == 1
