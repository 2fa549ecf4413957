"""Integration tests run against real local services: the suite's own (tests/conftest.py), started here."""

import os

import pytest

from tandem.services import services
from tandem.settings import get_settings


@pytest.fixture(scope="session")
def settings():
    """The suite's settings, its services up; those this session started are stopped when it ends
    (TANDEM_TEST_KEEP_SERVICES=1 keeps them for the next run)."""
    s = get_settings()
    started = []
    for svc in services(s):
        if svc.status().state == "stopped":
            started.append(svc)
        svc.up()
    yield s
    if os.environ.get("TANDEM_TEST_KEEP_SERVICES", "") not in ("1", "true"):
        for svc in reversed(started):
            svc.down()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
