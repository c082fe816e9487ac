"""Reads medallion's Delta tables with the Python `deltalake` and `polars` packages and checks them.

argv: LAKE RUN2_JSONL GOLD_JSONL SILVER_JSONL
- LAKE holds manifest.json (from gen_orders.py) and the lake medallion wrote.
- RUN2_JSONL is the JSON output of a second `medallion run`, which must have changed nothing.
- GOLD_JSONL / SILVER_JSONL are what medallion itself reads from gold and silver.
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

lake, run2, gold_out, silver_out = (Path(p) for p in sys.argv[1:5])
expected = json.loads((lake / "manifest.json").read_text())["expected"]


silver = DeltaTable(str(lake / "silver" / "orders"))
quarantine = DeltaTable(str(lake / "quarantine" / "orders"))
gold = DeltaTable(str(lake / "gold" / "daily_revenue"))

s = pl.from_arrow(read(silver))
q = pl.read_delta(str(lake / "quarantine" / "orders"))
g = pl.read_delta(str(lake / "gold" / "daily_revenue"))

check("silver rows (deltalake)", s.height, expected["silver_rows"])
check("silver distinct order_id", s["order_id"].n_unique(), expected["silver_rows"])
check("quarantine rows (polars)", q.height, expected["invalid_records"])
check("gold rows (polars)", g.height, expected["gold_rows"])
check("gold revenue sum", str(sum((Decimal(str(v)) for v in g["revenue"].to_list()), Decimal("0.00"))), expected["gold_amount_sum"])
check("silver amount sum", str(sum((Decimal(str(v)) for v in s["amount"].to_list()), Decimal("0.00"))), expected["gold_amount_sum"])
check("silver schema", [f.name for f in silver.schema().fields],
      ["order_id", "customer_id", "amount", "currency", "order_date", "region", "source", "_batch_id", "_ingested_at", "_source"])
check("gold order_count total", int(g["order_count"].sum()), expected["silver_rows"])
check("every quarantine row has a reason", int(q["_errors"].list.len().min()) >= 1, True)

# The second run must change nothing: no promotions, no rebuilds.
events = [json.loads(line) for line in run2.read_text().splitlines()]
summary = next(e for e in events if e["type"] == "summary")
check("rerun promoted nothing", summary["totals"], {"read": 0, "promoted": 0, "superseded": 0, "rejected": 0})
check("rerun rebuilt no gold model", [b["rebuilt"] for b in summary["gold"]], [False, False])
check("versions after rerun (silver, quarantine, gold)", (silver.version(), quarantine.version(), gold.version()), (0, 0, 0))

# Same rows through medallion's reader and Python's.
def key(row):
    return (str(row["order_date"]), row["region"], row["currency"])

ours = sorted((json.loads(line)["row"] for line in gold_out.read_text().splitlines()), key=key)
theirs = sorted(g.with_columns(pl.col("order_date").cast(pl.Utf8)).to_dicts(), key=key)
check("gold rows identical through both readers", [
    (key(a), int(a["order_count"]), Decimal(str(a["revenue"]))) for a in ours
] == [(key(b), int(b["order_count"]), Decimal(str(b["revenue"]))) for b in theirs], True)
# The plain Parquet export (outputs = ["parquet"]) holds the same rows, read by pyarrow and polars.
import pyarrow.parquet as pq

export = lake / "exports" / "daily_revenue.parquet"
exported = pl.read_parquet(str(export))
check("export rows identical to the Delta table (polars)", sorted(
    exported.with_columns(pl.col("order_date").cast(pl.Utf8)).to_dicts(), key=key) == theirs, True)
meta = pq.read_metadata(str(export)).metadata
check("export records the Delta version it holds (pyarrow)", meta[b"medallion.delta_version"], str(gold.version()).encode())
silver_stats = json.loads(silver_out.read_text().splitlines()[0])["row"]
check("silver stats through medallion", (silver_stats["n"], silver_stats["keys"], silver_stats["total"]),
      (expected["silver_rows"], expected["silver_rows"], expected["gold_amount_sum"]))

# Expectation results are a Delta table other readers can query too.
results = pl.read_delta(str(lake / "_medallion" / "expectations"))
check("expectation results recorded once (the rerun evaluated nothing)", results.height, 12)
check("every example expectation passed or only warned",
      sorted(set(results.filter(pl.col("outcome") != "pass")["expectation"].to_list())), ["fresh_orders"])
recon = results.filter(pl.col("expectation") == "revenue_reconciles").to_dicts()[0]
check("revenue reconciles gold with silver", (recon["outcome"], recon["failing_rows"]), ("pass", 0))
check("expectation results through deltalake", DeltaTable(str(lake / "_medallion" / "expectations")).version(), 0)

events = pl.read_delta(str(lake / "_medallion" / "events"))
check("event log: two runs, each opened and closed", sorted(events.filter(pl.col("type").is_in(["run_started", "run_finished"]))["type"].to_list()),
      ["run_finished", "run_finished", "run_started", "run_started"])
first = events.filter((pl.col("type") == "node_finished") & (pl.col("node") == "silver/orders")).sort("at").to_dicts()[0]
check("event log: silver rows read and rejected", (first["rows_read"], first["rows_rejected"]),
      (expected["valid_records"] + expected["invalid_records"], expected["invalid_records"]))

finish()
