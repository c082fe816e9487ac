#!/usr/bin/env bash
# The orders example with its gold models on a Ballista cluster (issue 18): a scheduler and two
# executors as separate processes over moto's S3 server; see check_cluster.py for what is checked.
# Usage: tests/cluster/run.sh PATH/TO/medallion   (built with the `cluster` feature)
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
gen="$root/../shared/bench/gen_orders.py"
if [ ! -f "$gen" ]; then
  echo "cluster: $gen not found (../shared beside the clone); cannot run" >&2
  exit 1
fi
if ! "$bin" scheduler --help >/dev/null 2>&1; then
  echo "cluster: $bin has no \`scheduler\` command (built without the cluster feature)" >&2
  exit 1
fi

source "$root/tests/venv.sh"
"$venv/bin/python" "$root/tests/cluster/check_cluster.py" "$bin" "$root" "$gen"
