"""Reads silver tables medallion changed the contract of (issue 15) with the Python `deltalake` and
`polars` packages: a column added in place (old rows null), then the table rebuilt from bronze
(every row carries it), and time travel to the version before the change.

argv: LAKE STAGE VERSION_BEFORE   (STAGE: `evolved` or `rebuilt`)
Prints one line per check and `N passed, N failed`; exits 1 on any failure.
"""
import json
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from checks import check, finish

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)

lake, stage, before = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
expected = json.loads((lake / "manifest.json").read_text())["expected"]
path = str(lake / "silver" / "orders")

s = pl.read_delta(path)
check(f"{stage}: silver rows (polars)", s.height, expected["silver_rows"])
check(f"{stage}: amount sum", str(sum((Decimal(str(v)) for v in s["amount"].to_list()), Decimal("0.00"))),
      expected["gold_amount_sum"])
check(f"{stage}: channel is a column", "channel" in s.columns, True)
if stage == "evolved":
    check("evolved: rows published before the change read channel as null", s["channel"].null_count(), s.height)
else:
    check("rebuilt: every row carries channel", s["channel"].null_count(), 0)
    check("rebuilt: channel = upper(source)", (s["channel"] == s["source"].str.to_uppercase()).all(), True)
    dead = pl.read_delta(str(lake / "quarantine" / "orders"))
    check("rebuilt: dead letter = the manifest's invalid records", dead.height, expected["invalid_records"])
    meta = DeltaTable(path).history(1)[0].get("medallion", {})
    check("rebuilt: the commit is marked a rebuild", json.loads(meta).get("rebuild") if isinstance(meta, str) else meta.get("rebuild"), True)
old = read(DeltaTable(path, version=before))
check(f"{stage}: version {before} has no channel", "channel" in old.column_names, False)
check(f"{stage}: version {before} rows", old.num_rows, expected["silver_rows"])
finish()
