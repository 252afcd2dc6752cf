"""Shared fixtures: the real data folder, temporary stores, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from eo_contrast.datasets.shared_data import shared_data_dir

settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that need it are skipped, saying why, where it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(
            f"real data folder {root} not found: set EO_CONTRAST_SHARED_DATA to the shared/data "
            "folder (CI always has it)"
        )
    return root


class S3Server:
    """A real S3-protocol server (moto) on loopback, with one empty bucket per request."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.key = "testing"
        self.secret = "testing"
        self.region = "us-east-1"

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs options reaching this server with its credentials."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": self.region},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto/s3fs at this server (no storage_options needed)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` and return ``s3://name``."""
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        ).create_bucket(Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server():
    """Start a moto S3 server on 127.0.0.1 (random port) for the session; stop it at the end."""
    pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
