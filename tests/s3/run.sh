#!/usr/bin/env bash
# The orders pipeline on a real S3-compatible server: moto's server mode (PyPI `moto[server]`),
# started on 127.0.0.1 with authentication on; see check_s3.py for what is checked (conditional
# PUT, end to end, Python interop over S3, clear errors, 4 concurrent writers, injected faults).
# Usage: tests/s3/run.sh PATH/TO/medallion
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="${MEDALLION_VENV:-$HOME/.cache/medallion-venv}"
gen="$root/../shared/bench/gen_orders.py"
if [ ! -f "$gen" ]; then
  echo "s3: $gen not found (../shared beside the clone); cannot run" >&2
  exit 1
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import deltalake, polars, pyarrow" 2>/dev/null; then
  "$venv/bin/pip" install --quiet deltalake==1.6.6 pyarrow==26.0.1 polars==2.1.0 polars-runtime-32==2.1.0
fi
if ! "$venv/bin/python" -c "import moto, boto3, flask" 2>/dev/null || [ ! -x "$venv/bin/moto_server" ]; then
  echo "s3: installing moto[server] into $venv" >&2
  "$venv/bin/pip" install --quiet "moto[server]==5.2.5" "boto3==1.44.8"
fi
"$venv/bin/python" "$root/tests/s3/check_s3.py" "$bin" "$root" "$gen"
