"""`compare.py LAKE_A LAKE_B`: every silver, dead-letter and gold table of LAKE_A equals LAKE_B's,
row for row (provenance columns that differ between two lakes by design, `_batch_id` and the
like, left out; batch ids inside dead-letter ids, records and paths masked), and neither lake has a table the other lacks."""

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)

a, b = sys.argv[1], sys.argv[2]


def tables(lake):
    return sorted(
        f"{layer}/{t}"
        for layer in ("silver", "quarantine", "gold")
        if os.path.isdir(f"{lake}/{layer}")
        for t in os.listdir(f"{lake}/{layer}")
    )


def rows(lake, table):
    t = read(f"{lake}/{table}")
    # Batch ids are random per lake, and so is anything naming or ordered by them.
    keep = [c for c in t.column_names if c not in ("_batch_id", "_run_id", "_quarantined_at", "_record_id")]
    # Dead-letter rows name their batch in their id, record and path: ids become `<id>`.
    ids = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
    out = [tuple(ids.sub("<id>", str(r[c])) for c in keep) for r in t.select(keep).to_pylist()]
    return keep, sorted(out)


assert tables(a) == tables(b), (tables(a), tables(b))
assert tables(a), "no tables"
for table in tables(a):
    ka, ra = rows(a, table)
    kb, rb = rows(b, table)
    assert ka == kb, (table, ka, kb)
    assert ra == rb, f"{table}: {len(ra)} rows vs {len(rb)}; first difference {next((x, y) for x, y in zip(ra, rb) if x != y) if len(ra) == len(rb) else ''}"
    print(f"{table}: {len(ra)} rows equal")
sys.stdout.flush()
# Exit without the interpreter's teardown: deltalake's native threads can abort it ("terminate
# called without an active exception") after every check has passed (as tests/interop/checks.py).
os._exit(0)
