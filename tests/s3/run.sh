#!/usr/bin/env bash
# The orders pipeline on a real S3-compatible server: moto's server mode (PyPI `moto[server]`),
# started on 127.0.0.1 with authentication on; see check_s3.py for what is checked (conditional
# PUT, end to end, Python interop over S3, clear errors, 4 concurrent writers, injected faults).
# Usage: tests/s3/run.sh PATH/TO/medallion
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
gen="$root/../shared/bench/gen_orders.py"
if [ ! -f "$gen" ]; then
  echo "s3: $gen not found (../shared beside the clone); cannot run" >&2
  exit 1
fi

source "$root/tests/venv.sh"
"$venv/bin/python" "$root/tests/s3/check_s3.py" "$bin" "$root" "$gen"
