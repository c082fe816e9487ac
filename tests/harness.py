"""Helpers the Python test scripts share: named checks that count passes and failures, and
local ports for the servers they start."""
import json
import socket
import time


class Checks:
    """`check(name, ok, detail)`: prints `ok`/`FAIL` with the name (and the detail), counts both."""

    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, name, ok, detail=""):
        self.passed += bool(ok)
        self.failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    """Returns once something accepts connections on 127.0.0.1:`port`; raises after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def moto_user(endpoint):
    """On a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=4: an IAM user allowed every S3
    action (3 calls; the 4th is the caller's bucket). Returns its (access key id, secret)."""
    import boto3

    boot = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="medallion")
    key = iam.create_access_key(UserName="medallion")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="medallion", PolicyName="lake", PolicyDocument=json.dumps(policy))
    return key["AccessKeyId"], key["SecretAccessKey"]
