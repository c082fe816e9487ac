"""`MedallionRunOperator`: one node of a medallion project as an Airflow task.

    MedallionRunOperator(task_id="silver__orders", project_dir="/srv/orders", select="silver/orders",
                         date="{{ ds }}", inputs=["bronze/orders"], outputs=["silver/orders"])

It runs `medallion --format json run --project <dir> --select <node> [--date <date>]` with the
binary installed by this package, logs each node's outcome as it finishes, returns the run summary
(pushed to XCom), and fails the task when the run failed (exit 1: a node failed; 2: the tool could
not run), naming the failed nodes and their errors. Every medallion run is idempotent, so Airflow's
retries never duplicate data. With Airflow's OpenLineage provider installed, the task reports the
node's input and output tables as datasets (`lineage_namespace`, e.g. `file` or `s3://bucket`).
`medallion airflow-dag --operator medallion` writes a DAG of these.
"""

import json
import os
import subprocess

from . import binary

try:  # Airflow 3
    from airflow.sdk import BaseOperator
except ImportError:  # Airflow 2
    from airflow.models import BaseOperator

try:
    from airflow.exceptions import AirflowException
except ImportError:  # pragma: no cover
    AirflowException = RuntimeError


class MedallionRunOperator(BaseOperator):
    template_fields = ("project_dir", "select", "date", "extra_args")
    ui_color = "#c9a227"

    def __init__(self, *, project_dir, select, date=None, medallion=None, extra_args=(), inputs=(),
                 outputs=(), lineage_namespace=None, **kwargs):
        super().__init__(**kwargs)
        self.project_dir = project_dir
        self.select = select
        self.date = date
        self.medallion = medallion
        self.extra_args = list(extra_args)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.lineage_namespace = lineage_namespace

    def command(self):
        cmd = [self.medallion or binary(), "--format", "json", "run", "--project", self.project_dir,
               "--select", self.select]
        if self.date:
            cmd += ["--date", self.date]
        return cmd + self.extra_args

    def execute(self, context):
        cmd = self.command()
        self.log.info("running %s", " ".join(cmd))
        env = os.environ.copy()
        if "OPENLINEAGE_PARENT_ID" not in env:
            # With Airflow's OpenLineage provider, medallion's own lineage events name this task
            # run as their parent (and root), so the graph links task -> medallion run -> nodes.
            try:
                from airflow.providers.openlineage.plugins.macros import lineage_parent_id

                env["OPENLINEAGE_PARENT_ID"] = lineage_parent_id(context["ti"])
            except Exception:  # the provider is optional
                pass
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        summary = None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.log.info("%s", line.rstrip())
                continue
            kind = event.get("type")
            if kind == "node_finished":
                self.log.info("%s: %s (%s attempt(s), %s ms)", event.get("node"), event.get("status"),
                              event.get("attempts"), event.get("duration_ms"))
            elif kind == "summary":
                summary = event
        stderr = proc.stderr.read()
        code = proc.wait()
        for line in stderr.splitlines():
            self.log.info("%s", line)
        if code != 0:
            failed = (summary or {}).get("failed") or []
            why = "; ".join(f"{f.get('node')}: {f.get('error')}" for f in failed) or stderr.strip()[-2000:]
            raise AirflowException(f"medallion run --select {self.select} failed (exit {code}): {why}")
        return summary

    def get_openlineage_facets_on_complete(self, task_instance):
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        namespace = self.lineage_namespace or "file"
        return OperatorLineage(
            inputs=[Dataset(namespace=namespace, name=n) for n in self.inputs],
            outputs=[Dataset(namespace=namespace, name=n) for n in self.outputs],
        )
