"""A real S3 API server for tests: moto in server mode, in its own process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import httpx

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rar-test", "AWS_SECRET_ACCESS_KEY": "rar-test-secret", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """``python -m moto.server`` on a free port; ``env`` holds the standard AWS variables that reach it."""

    def __init__(self) -> None:
        # A free port can be taken by another process (a parallel test worker) before moto binds it: retry.
        for _ in range(3):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._answers(timeout=30):
                return
            self.stop()
        raise RuntimeError("moto server did not start")

    def _answers(self, timeout: float) -> bool:
        """Whether this server answers within ``timeout`` seconds (False as soon as its process exits: then
        whatever answers on the port is another process's)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return self.process.poll() is None
            except httpx.TransportError:
                time.sleep(0.2)
        return False

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def new_bucket(self) -> str:
        """A fresh, empty bucket."""
        import boto3

        name = f"rar-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def clear_fsspec_cache() -> None:
    """fsspec keeps filesystem instances (and their listings) per options: start each test afresh."""
    import fsspec

    for cls in (fsspec.get_filesystem_class("s3"),):
        cls.clear_instance_cache()
    os.environ.pop("RAR_HOME", None)
