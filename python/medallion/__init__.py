"""medallion: medallion-architecture pipelines (bronze → silver → gold) on a Delta lakehouse.

The wheel carries the `medallion` binary (on the venv's PATH) and this small package:
`binary()` finds that binary, and `medallion.airflow.MedallionRunOperator` runs a node of a
project from Apache Airflow.
"""

import os
import shutil
import sys
import sysconfig

__all__ = ["binary"]


def binary() -> str:
    """The path of the `medallion` binary installed with this package (else the one on PATH)."""
    name = "medallion.exe" if sys.platform == "win32" else "medallion"
    for scheme in (None, "posix_user", "nt_user"):
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        candidate = os.path.join(scripts, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError("the medallion binary is not installed with this package, nor on PATH")
