#!/usr/bin/env python3
"""The DuckDB side of `scripts/bench --modes csv` (issue 20): the plain project's job on CSV files.

    python bench-csv-duckdb.py LANDING_DIR OUT_DIR

What a user who loads a folder of CSV exports with DuckDB instead writes, as scripts/bench-project
declares it for medallion: read every `*.csv` of LANDING_DIR (header, `NA` is null, all text),
type each column with TRY_CAST (`order_id`/`customer_id` BIGINT, `amount` DECIMAL(18,2),
`order_date` DATE, `currency` upper-cased), reject a row with any column missing or not of its
type, a non-positive amount or an unknown currency (the dead letter, with the raw text), keep the
latest row per `order_id` (the later file, then the later row: files are named in landing order),
and write silver, the dead letter and the daily revenue model (examples/orders/gold/daily_revenue.sql)
as Parquet under OUT_DIR. Prints one JSON line: wall seconds and the counts the bench compares.
"""
import json
import re
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
CURRENCIES = "'USD', 'EUR', 'GBP', 'JPY', 'CAD'"
COLUMNS = ["order_id", "customer_id", "amount", "currency", "order_date", "region", "source"]


def main():
    landing, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    gold_sql = (ROOT / "examples/orders/gold/daily_revenue.sql").read_text()
    gold_sql = re.sub(r"\{\{\s*ref\('orders'\)\s*\}\}", f"read_parquet('{out}/silver.parquet')", gold_sql)
    start = time.monotonic()
    con = duckdb.connect()
    con.execute(f"""
        CREATE TEMP TABLE raw AS
        SELECT * FROM read_csv('{landing}/*.csv', header = true, all_varchar = true, nullstr = 'NA',
                               filename = true, union_by_name = true)""")
    con.execute(f"""
        CREATE TEMP TABLE typed AS
        SELECT rowid AS pos, filename, {", ".join(COLUMNS)},
               TRY_CAST(order_id AS BIGINT) AS t_order_id,
               TRY_CAST(customer_id AS BIGINT) AS t_customer_id,
               TRY_CAST(amount AS DECIMAL(18, 2)) AS t_amount,
               upper(currency) AS t_currency,
               TRY_CAST(order_date AS DATE) AS t_order_date
        FROM raw""")
    ok = " AND ".join(
        [f"{c} IS NOT NULL" for c in COLUMNS]
        + ["t_order_id IS NOT NULL", "t_customer_id IS NOT NULL", "t_amount IS NOT NULL", "t_order_date IS NOT NULL",
           "t_amount > 0", f"t_currency IN ({CURRENCIES})"])
    con.execute(f"CREATE TEMP TABLE verdict AS SELECT *, COALESCE({ok}, false) AS ok FROM typed")
    con.execute(f"COPY (SELECT {', '.join(COLUMNS)}, filename FROM verdict WHERE NOT ok) "
                f"TO '{out}/dead_letter.parquet' (FORMAT parquet)")
    con.execute(f"""
        COPY (SELECT t_order_id AS order_id, t_customer_id AS customer_id, t_amount AS amount,
                     t_currency AS currency, t_order_date AS order_date, region, source
              FROM verdict WHERE ok
              QUALIFY row_number() OVER (PARTITION BY t_order_id ORDER BY filename DESC, pos DESC) = 1)
        TO '{out}/silver.parquet' (FORMAT parquet)""")
    con.execute(f"COPY ({gold_sql}) TO '{out}/daily_revenue.parquet' (FORMAT parquet)")
    wall = time.monotonic() - start
    counts = con.execute(f"""
        SELECT (SELECT count(*) FROM read_parquet('{out}/silver.parquet')),
               (SELECT count(*) FROM read_parquet('{out}/dead_letter.parquet')),
               (SELECT count(*) FROM read_parquet('{out}/daily_revenue.parquet')),
               (SELECT CAST(sum(revenue) AS VARCHAR) FROM read_parquet('{out}/daily_revenue.parquet'))""").fetchone()
    keys = ["silver_rows", "invalid_records", "gold_rows", "gold_amount_sum"]
    print(json.dumps({"wall_s": wall, **dict(zip(keys, counts))}))


if __name__ == "__main__":
    main()
