"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

The hub talks to it over HTTP exactly as it would to AWS or MinIO; only the server is a stand-in
(S3 itself is a cloud API outside this machine).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import boto3.session
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


class S3Server:
    """moto's S3 in a thread of the test process, serving on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        # Port 0: the OS picks a free port while binding, so parallel runs cannot collide.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""
        # One session for every store of the run: each new one loads botocore's models anew.
        self.session = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        self._client: S3Client | None = None

    def start(self) -> None:
        # werkzeug logs every request at INFO, which would bury a failing test's output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self._client = self.session.client("s3", endpoint_url=self.endpoint_url)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._server.stop()

    def etag(self, bucket: str, key: str) -> str:
        assert self._client is not None, "start() the server first"
        return self._client.head_object(Bucket=bucket, Key=key)["ETag"]

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (any prefix), sorted, read behind the store's back; [] if the
        bucket does not exist."""
        assert self._client is not None, "start() the server first"
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        try:
            return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
        except self._client.exceptions.NoSuchBucket:
            return []
