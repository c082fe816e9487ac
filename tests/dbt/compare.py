"""Compares dbt's DuckDB tables with medallion's Delta tables, row for row.

Usage: compare.py DBT_DUCKDB_FILE LAKE_DIR gold:NAME... silver:NAME...

Each medallion table must hold the dbt table's columns (silver also has _batch_id, _ingested_at,
_source) and the same multiset of rows: integers, strings, booleans and dates exactly, floats within
1e-9 relative. Exits 1 naming every difference.
"""
import datetime
import decimal
import math
import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)


def norm(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=None).isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    return v


def key(row):
    return tuple((v is None, str(type(v).__name__) if v is not None else "", v if v is not None else 0) for v in row)


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def main():
    db, lake, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
    con = duckdb.connect(db, read_only=True)
    problems = []
    for spec in tables:
        layer, name = spec.split(":")
        cur = con.execute(f'select * from main."{name}"')
        columns = [d[0] for d in cur.description]
        expected = sorted((tuple(norm(v) for v in row) for row in cur.fetchall()), key=key)
        table = read(f"{lake}/{layer}/{name}")
        have = {c.lower(): c for c in table.column_names}
        missing = [c for c in columns if c.lower() not in have]
        extra = [c for c in have if c not in {x.lower() for x in columns} and not c.startswith("_")]
        if missing or extra:
            problems.append(f"{layer}/{name}: columns differ: missing {missing}, extra {extra}")
            continue
        rows = table.select([have[c.lower()] for c in columns]).to_pylist()
        actual = sorted((tuple(norm(r[have[c.lower()]]) for c in columns) for r in rows), key=key)
        if len(actual) != len(expected):
            problems.append(f"{layer}/{name}: {len(actual)} rows, dbt has {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            if len(a) != len(e) or not all(same(x, y) for x, y in zip(a, e)):
                problems.append(f"{layer}/{name}: row {i} differs:\n  medallion {a}\n  dbt       {e}")
                break
        print(f"dbt: {layer}/{name}: {len(actual)} rows, {len(columns)} columns compared", file=sys.stderr)
    for p in problems:
        print(f"dbt: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
