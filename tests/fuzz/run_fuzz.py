#!/usr/bin/env python3
"""Time-bounded fuzzing of csoftmax for CI:  python tests/fuzz/run_fuzz.py --seconds 60

The fuzzing runs in a child process, so that a crash (segfault, abort, sanitizer report) or a hang cannot take the
record of its input with it: before every call the child writes the case into a shared file, and when the child
dies the parent saves that case. Every failing or crashing input is saved into tests/fuzz/corpus/ as
<kind>-<hash>.npz (replayed by tests/fuzz/test_fuzz.py::test_corpus_case), and the exit status is 1.

Engines (--engine): atheris (libFuzzer, coverage-guided on the Python layer; the default when importable),
hypothesis (shrinks failures to a minimal case), bytes (plain random bytes), both (atheris then hypothesis, half the
time each). Other options: --seed, --max-failures, --corpus DIR, --replay (run the corpus and exit).
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHM_SIZE = 64 << 20

# As `python -m pytest` from the repository root would: the in-place build if there is one, else (csoftmax's
# __init__ hands over) the installed package.
if REPO not in sys.path:
    sys.path.insert(0, REPO)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _have_atheris():
    try:
        import atheris  # noqa: F401
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------------ child


class Recorder:
    """Keeps the case about to run in a shared file (length, then a pickle), for the parent to find after a crash."""

    def __init__(self, path):
        self.f = open(path, "r+b")
        self.mm = mmap.mmap(self.f.fileno(), SHM_SIZE)

    def __call__(self, case):
        blob = pickle.dumps(case, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) + 8 > SHM_SIZE:
            self.mm[0:8] = struct.pack("<Q", 0)
            return
        self.mm[8:8 + len(blob)] = blob
        self.mm[0:8] = struct.pack("<Q", len(blob))


def child(args):
    deadline_seconds = args.seconds
    record = Recorder(args.shm) if args.shm else None
    stats = {"engine": args.engine, "cases": 0, "failures": []}
    start = time.monotonic()

    def write_stats():
        stats["seconds"] = round(time.monotonic() - start, 2)
        with open(args.stats, "w") as f:
            json.dump(stats, f)

    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["csoftmax", "fuzz_harness"]):
            import fuzz_harness as fh
        seen = set()
        deadline = start + deadline_seconds

        def test_one_input(data):
            if time.monotonic() > deadline or len(stats["failures"]) >= args.max_failures:
                write_stats()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            case = fh.build_case(fh.BytesDraw(data))
            stats["cases"] += 1
            if record:
                record(case)
            try:
                fh.check_case(case)
            except fh.FuzzFailure as e:
                if e.kind in seen:
                    return
                seen.add(e.kind)
                small = fh.shrink_case(case)
                _report(fh, small, e, stats, args.corpus)

        artifacts = tempfile.mkdtemp(prefix="csoftmax-fuzz-artifacts-")
        atheris.Setup([sys.argv[0], f"-seed={args.seed or 1}", "-max_len=256", "-timeout=120", "-rss_limit_mb=8192",
                       f"-artifact_prefix={artifacts}/", "-print_final_stats=0"], test_one_input)
        atheris.Fuzz()
        write_stats()  # not reached: Fuzz() ends the process
        return 0

    import fuzz_harness as fh

    def on_failure(case, err):
        _report(fh, case, err, stats, args.corpus)

    def before(case):
        stats["cases"] += 1
        if record:
            record(case)

    # the engines count through `before`
    if args.engine == "hypothesis":
        fh.hypothesis_engine(deadline_seconds, on_failure, seed=args.seed, max_failures=args.max_failures,
                             before_call=before)
    else:
        fh.bytes_engine(deadline_seconds, on_failure, seed=args.seed, max_failures=args.max_failures,
                        before_call=before)
    write_stats()
    return 0


def _report(fh, case, err, stats, corpus):
    path = fh.save_case(case, err.kind, corpus)
    stats["failures"].append({"kind": err.kind, "message": str(err), "path": path})
    print(f"\nFAILURE {err}\n  case: {fh.describe(case)}\n  saved: {path}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ parent


def run_engine(engine, seconds, args):
    """Runs one engine in a child process; returns (stats dict, crashed: bool)."""
    tmp = tempfile.mkdtemp(prefix="csoftmax-fuzz-")
    shm = os.path.join(tmp, "last-case.bin")
    with open(shm, "wb") as f:
        f.truncate(SHM_SIZE)
    stats_path = os.path.join(tmp, "stats.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--engine", engine, "--seconds", str(seconds),
           "--seed", str(args.seed), "--max-failures", str(args.max_failures), "--shm", shm, "--stats", stats_path]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    print(f"=== fuzzing csoftmax with {engine} for {seconds:g} s", flush=True)
    crashed = None
    log_path = os.path.join(tmp, "child.log")
    try:
        with open(log_path, "wb") as log:              # libFuzzer's progress lines: kept out of the CI log
            proc = subprocess.run(cmd, timeout=seconds + 300, stdout=log, stderr=subprocess.STDOUT)
        rc = proc.returncode
        if rc < 0:
            crashed = f"crash-{signal.Signals(-rc).name}"
        elif rc != 0 or not os.path.exists(stats_path):
            crashed = f"crash-exit{rc}"
    except subprocess.TimeoutExpired:
        crashed = "hang"
    stats = {"engine": engine, "cases": None, "failures": []}
    with open(log_path, "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    interesting = [ln for ln in lines if not ln.startswith("#")]
    if crashed or any("FAILURE" in ln for ln in lines):
        print("\n".join(interesting[-60:]), file=sys.stderr)
        print(f"(full output of the fuzzing process: {log_path})", file=sys.stderr)
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            stats = json.load(f)
    if crashed:
        import fuzz_harness as fh

        with open(shm, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            blob = f.read(n) if n else b""
        if blob:
            case = pickle.loads(blob)
            path = fh.save_case(case, crashed, args.corpus)
            print(f"\nCRASH ({crashed}) on the case below; saved as {path}\n  {fh.describe(case)}", file=sys.stderr)
            stats["failures"].append({"kind": crashed, "message": crashed, "path": path})
        else:
            print(f"\nCRASH ({crashed}) before any case ran (import or setup)", file=sys.stderr)
            stats["failures"].append({"kind": crashed, "message": "before any case", "path": None})
    return stats


def replay(args):
    import fuzz_harness as fh

    files = fh.corpus_files(args.corpus)
    bad = 0
    for path in files:
        try:
            fh.check_case(fh.load_case(path))
            print(f"ok    {os.path.basename(path)}")
        except AssertionError as e:
            bad += 1
            print(f"FAIL  {os.path.basename(path)}: {e}")
    print(f"{len(files)} corpus cases, {bad} failing")
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--engine", choices=("auto", "atheris", "hypothesis", "bytes", "both"), default="auto")
    p.add_argument("--seed", type=int, default=int(os.environ.get("CSOFTMAX_FUZZ_SEED", "0")) or None)
    p.add_argument("--max-failures", type=int, default=5)
    p.add_argument("--corpus", default=None, help="where failing cases go (default tests/fuzz/corpus)")
    p.add_argument("--replay", action="store_true", help="check every corpus case and exit")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shm", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(3), "little") + 1
    if args.child:
        return child(args)
    if args.replay:
        return replay(args)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "hypothesis"
    plan = [("atheris", args.seconds / 2), ("hypothesis", args.seconds / 2)] if engine == "both" else [
        (engine, args.seconds)]
    if any(e == "atheris" for e, _ in plan) and not _have_atheris():
        print("atheris is not installed (pip install atheris); use --engine hypothesis", file=sys.stderr)
        return 2
    total, failures = 0, []
    print(f"seed {args.seed}", flush=True)
    for engine, seconds in plan:
        stats = run_engine(engine, seconds, args)
        total += stats.get("cases") or 0
        failures += stats["failures"]
        print(f"=== {engine}: {stats.get('cases')} inputs in {stats.get('seconds', '?')} s, "
              f"{len(stats['failures'])} failure(s)", flush=True)
    print(f"fuzzed {total} inputs; {len(failures)} failure(s)")
    for f in failures:
        print(f"  {f['kind']}: {f['path']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
