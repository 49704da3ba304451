"""Options of the whole suite: the largest-account runs are on demand (`make test-large`)."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--large", action="store_true",
                     help="also run the largest-account tests (minutes each; `make test-large`)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a largest-account run, only with --large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--large"):
        return
    skip = pytest.mark.skip(reason="largest-account run: `make test-large`")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
