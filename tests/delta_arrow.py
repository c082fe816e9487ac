"""A Delta table as a pyarrow Table, read by the `deltalake` package with deletion vectors applied.

deltalake 1.6's `DeltaTable.to_pyarrow_table()` and `to_pandas()` refuse every table whose protocol
lists the `deletionVectors` reader feature (medallion's silver tables, by default); its SQL reader
(`QueryBuilder`) reads them and applies the vectors. The test scripts read every table this way.
"""
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder


def read(table):
    """`table`: a DeltaTable (any version, any storage options) or a path."""
    dt = table if isinstance(table, DeltaTable) else DeltaTable(str(table))
    return pa.table(QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all())
