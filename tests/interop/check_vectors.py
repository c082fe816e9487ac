"""Deletion vectors against copy-on-write, as other readers see them (issue 16).

`check_vectors.py DV_LAKE COW_LAKE STAGE`: the same bronze batches were run one per run into a lake
whose silver orders merge with deletion vectors (the default) and into one with
`merge = "copy_on_write"`. The Python `deltalake` (its SQL reader: `to_pyarrow_table` refuses
deletion-vector tables) and `polars` must read the same rows, keys and sums from both, and
`load_cdf` must give the same change feed. STAGE `merged`: the DV lake's files still carry deleted
rows; `purged` (after `medallion optimize`): none do, and the rows are unchanged.
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

dv_lake, cow_lake, stage = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
expected = json.loads((dv_lake / "manifest.json").read_text())["expected"]
dv_path, cow_path = str(dv_lake / "silver" / "orders"), str(cow_lake / "silver" / "orders")
dv, cow = DeltaTable(dv_path), DeltaTable(cow_path)

check(f"{stage}: the DV table's protocol has the deletionVectors reader feature",
      "deletionVectors" in (dv.protocol().reader_features or []), True)
check(f"{stage}: the copy-on-write table's has not", "deletionVectors" in (cow.protocol().reader_features or []), False)


def rows(table):
    t = pl.from_arrow(table)
    return t.select(sorted(t.columns)).sort("order_id")


a, b = read(dv), read(cow)
check(f"{stage}: deltalake reads the manifest's rows", a.num_rows, expected["silver_rows"])
check(f"{stage}: deltalake reads unique keys", len(set(a.column("order_id").to_pylist())), expected["silver_rows"])
check(f"{stage}: deltalake reads the manifest's amount sum",
      str(sum((Decimal(str(v)) for v in a.column("amount").to_pylist()), Decimal("0.00"))), expected["gold_amount_sum"])
check(f"{stage}: deltalake reads every row of the DV table as in the copy-on-write one", rows(a).equals(rows(b)), True)
pa_, pb = pl.read_delta(dv_path), pl.read_delta(cow_path)
check(f"{stage}: polars reads the same rows from both", pa_.sort("order_id").equals(pb.sort("order_id")), True)
check(f"{stage}: polars reads what deltalake reads", pa_.height == a.num_rows, True)

# Rows the files hold against rows read: the deleted rows the vectors still hide.
held = sum(pa.table(dv.get_add_actions(flatten=True)).column("num_records").to_pylist())
if stage == "merged":
    # (The after-run policy may have purged them since: vector files stay until a vacuum.)
    check("merged: merges wrote deletion vectors", any(Path(dv_path).glob("deletion_vector_*.bin")), True)
else:
    check("purged: no file holds a deleted row", held, a.num_rows)


def feed(table):
    cdf = pl.from_arrow(pa.table(table.load_cdf(starting_version=0).read_all()))
    keep = [c for c in cdf.columns if c not in ("_commit_version", "_commit_timestamp")]
    return cdf.select(keep).sort(keep)


fa, fb = feed(dv), feed(cow)
check(f"{stage}: load_cdf gives the same change feed (rows)", fa.height, fb.height)
check(f"{stage}: load_cdf gives the same change feed (contents)", fa.equals(fb), True)
check(f"{stage}: the feed has update preimages", fa.filter(pl.col("_change_type") == "update_preimage").height > 0, True)
finish()
