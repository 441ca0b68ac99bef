#!/usr/bin/env python3
"""A whole run of N generated targets on the embedded simulator: wall time, calls
per second and peak resident memory of `partnerforge run` (release build).

    cargo build --release
    python3 benches/whole_run.py 100000          # also 1000000

The book is written by benches/book.py into a scratch folder, with the store, and
both are removed afterwards unless --keep is given. Peak memory is the run's
maximum resident set size as the kernel counts it (getrusage of the child).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("targets", type=int)
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "partnerforge"))
    parser.add_argument("--scratch", default=None, help="folder for the book and the store (default: a temp folder)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    scratch = args.scratch or tempfile.mkdtemp(prefix="partnerforge-bench-")
    os.makedirs(scratch, exist_ok=True)
    book = os.path.join(scratch, f"book-{args.targets}.csv")
    store = os.path.join(scratch, "store")
    subprocess.run([sys.executable, os.path.join(HERE, "book.py"), str(args.targets), book], check=True)
    started = time.monotonic()
    run = subprocess.run(
        [args.binary, "run", "--targets", book, "--store", store, "--date", "2026-11-20", "--format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wall = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if run.returncode not in (0, 3):
        sys.exit(f"partnerforge run exited {run.returncode}")
    summary = json.loads(run.stdout)
    calls = summary["counts"]["calls"]
    print(f"targets {args.targets}  scored {summary['counts']['targets']}  calls {calls}  "
          f"wall {wall:.1f} s  {calls / wall:,.0f} calls/s  peak RSS {peak_kib / 1024:,.0f} MiB")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
