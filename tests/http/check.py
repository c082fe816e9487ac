"""Checks a lake fed by tests/http/api.py: `check.py LAKE DATA_FILE SOURCE...`.

Every version in DATA_FILE.versions is in each source's bronze exactly once (no loss, no
duplicate), nothing else is; silver `orders` holds each order's latest version."""

import collections
import glob
import gzip
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)

lake, data, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
expected = collections.Counter(tuple(line.split()) for line in open(data + ".versions"))
assert all(n == 1 for n in expected.values()), "the API served a version twice"
for source in sources:
    landed = collections.Counter()
    batches = glob.glob(f"{lake}/bronze/{source}/*/*.ndjson.gz")
    for batch in batches:
        for line in gzip.open(batch, "rt"):
            r = json.loads(line)
            assert r["_source"] == source, r
            landed[(str(r["id"]), r["updated_at"], r["amount"])] += 1
    twice = [v for v, n in landed.items() if n > 1]
    missing = set(expected) - set(landed)
    extra = set(landed) - set(expected)
    assert not twice, f"{source}: {len(twice)} versions landed twice, e.g. {twice[:3]}"
    assert not missing, f"{source}: {len(missing)} versions lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{source}: {len(extra)} versions never served, e.g. {sorted(extra)[:3]}"
    print(f"{source}: {sum(landed.values())} records in {len(batches)} batches, every version once")

latest = {o["id"]: o for o in json.load(open(data))["orders"]}
rows = read(f"{lake}/silver/orders").to_pylist()
got = {r["id"]: r for r in rows}
assert len(rows) == len(got) == len(latest), (len(rows), len(got), len(latest))
for i, o in latest.items():
    r = got[i]
    assert str(r["amount"]) == o["amount"] and r["tier"] == o["tier"], (r, o)
print(f"silver/orders: {len(rows)} orders, each at its latest version")
sys.stdout.flush()
# Exit without the interpreter's teardown: deltalake's native threads can abort it ("terminate
# called without an active exception") after every check has passed (as tests/interop/checks.py).
os._exit(0)
