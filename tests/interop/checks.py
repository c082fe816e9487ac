"""The interop scripts' check lines: `ok`/`FAIL` per check, a count, and the exit status."""
import os
import sys

_counts = {"passed": 0, "failed": 0}


def check(name, got, want):
    ok = got == want
    _counts["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}: got {got!r}, want {want!r}")


def finish():
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without the interpreter's teardown: deltalake's and polars' native threads can abort
    # it ("terminate called without an active exception") after every check has passed.
    os._exit(1 if _counts["failed"] else 0)
