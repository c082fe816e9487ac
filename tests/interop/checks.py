"""The interop scripts' check lines: `ok`/`FAIL` per check, a count, and the exit status."""
import sys

_counts = {"passed": 0, "failed": 0}


def check(name, got, want):
    ok = got == want
    _counts["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}: got {got!r}, want {want!r}")


def finish():
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    sys.exit(1 if _counts["failed"] else 0)
