"""Reads a silver table medallion built one batch per run (so merged into at every run) with the
Python `deltalake` and `polars` packages: its rows against the generator's manifest, its last
commit's metrics and change data feed against medallion's own account of the run.

argv: LAKE LAST_RUN_JSONL (the JSON output of the last `medallion run`)
Prints one line per check and `N passed, N failed`; exits 1 on any failure.
"""
import json
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from checks import check, finish

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)

lake, last_run = Path(sys.argv[1]), Path(sys.argv[2])
expected = json.loads((lake / "manifest.json").read_text())["expected"]


silver = DeltaTable(str(lake / "silver" / "orders"))
s = pl.read_delta(str(lake / "silver" / "orders"))
check("merged silver rows (polars)", s.height, expected["silver_rows"])
check("merged silver keys unique", s["order_id"].n_unique(), expected["silver_rows"])
check("merged silver amount sum", str(sum((Decimal(str(v)) for v in s["amount"].to_list()), Decimal("0.00"))),
      expected["gold_amount_sum"])
check("merged silver rows (deltalake)", read(silver).num_rows, expected["silver_rows"])

node = next(json.loads(l) for l in last_run.read_text().splitlines()
            if '"node_finished"' in l and '"silver/orders"' in l)
commit = silver.history(1)[0]
metrics = commit.get("operationMetrics", {})
check("last commit is a MERGE", commit.get("operation"), "MERGE")
check("its metrics match the run (inserted, updated)",
      (metrics.get("num_target_rows_inserted"), metrics.get("num_target_rows_updated")),
      (node["rows_inserted"], node["rows_updated"]))
check("the last run replaced rows", node["rows_updated"] > 0, True)

v = silver.version()
cdf = pl.from_arrow(pa.table(silver.load_cdf(starting_version=v, ending_version=v).read_all()))
counts = dict(cdf.group_by("_change_type").len().rows())
check("change data feed of the last merge (insert, update_postimage, update_preimage)",
      (counts.get("insert", 0), counts.get("update_postimage", 0), counts.get("update_preimage", 0)),
      (node["rows_inserted"], node["rows_updated"], node["rows_updated"]))
pre = cdf.filter(pl.col("_change_type") == "update_preimage").select("order_id", "_ingested_at")
post = cdf.filter(pl.col("_change_type") == "update_postimage").select("order_id", "_ingested_at")
joined = pre.join(post, on="order_id", suffix="_new")
check("each preimage has a newer postimage", (joined.height, bool((joined["_ingested_at_new"] > joined["_ingested_at"]).all())),
      (node["rows_updated"], True))

finish()
