"""A real S3-compatible server for the tests: moto's server in a child process on
127.0.0.1, stopped by its PID; and a plain boto3 client to look at what is stored."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

#: moto accepts any key pair; these are what the tests' harvester and boto3 use.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIATESTKEY0000000",
    "AWS_SECRET_ACCESS_KEY": "s3cret-DO-NOT-LEAK",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        boto3 = pytest.importorskip("boto3")
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        client = self.client()
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for o in listed}  # fmt: skip

    def archive(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """The objects, without the live jobs' leases."""
        objects = self.objects(bucket, prefix)
        return {k: v for k, v in objects.items() if ".harvester-live/" not in k}

    def runs(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """The runs' data objects: the archive without its manifests."""
        archive = self.archive(bucket, prefix)
        return {k: v for k, v in archive.items() if not k.endswith(".manifest.json")}

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return list(answer.get("Uploads", []))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(*, authenticate: bool = False) -> Iterator[S3Server]:
    """moto's server; `authenticate`: it checks every request's signature against its IAM
    users (it has none, so every key is refused)."""
    pytest.importorskip("moto.server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield S3Server(url, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
