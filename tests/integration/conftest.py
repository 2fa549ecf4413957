"""Integration tests run against the real local services started by `tandem services up`."""

import pytest

from tandem.services import services
from tandem.settings import get_settings


@pytest.fixture(scope="session")
def settings():
    s = get_settings()
    for svc in services(s):
        svc.up()
    return s


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
