# Sourced by the test scripts: makes sure the Python venv at $venv (default
# ~/.cache/medallion-venv, outside the clone) holds the pinned packages every check uses:
# deltalake, pyarrow, polars (Delta interop), jsonschema (OpenLineage schemas), moto[server] and
# boto3 (the S3 server and its client). Installs only what is missing.
venv="${MEDALLION_VENV:-$HOME/.cache/medallion-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import deltalake, polars, pyarrow, jsonschema, referencing, moto, boto3, flask" 2>/dev/null \
   || [ ! -x "$venv/bin/moto_server" ]; then
  echo "tests: installing the Python test packages into $venv" >&2
  "$venv/bin/pip" install --quiet deltalake==1.6.6 pyarrow==26.0.1 polars==2.1.0 polars-runtime-32==2.1.0 \
    jsonschema==4.26.0 "moto[server]==5.2.5" boto3==1.44.8
fi
