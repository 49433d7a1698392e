"""Fixtures of the object-store tier: one SeaweedFS S3 server per session (tests/s3/server.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.s3.server import SeaweedS3, running_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/s3/" in str(item.fspath):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    yield from running_server()


@pytest.fixture
def bucket(s3_server: SeaweedS3) -> str:
    """A fresh bucket per test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name
