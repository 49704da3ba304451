"""Options of the whole suite: the largest-account runs are on demand (`make test-large`); every stack records its
functions' AWS calls for tests/iam."""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--large", action="store_true",
                     help="also run the largest-account tests (minutes each; `make test-large`)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a largest-account run, only with --large")
    # Each stack writes its functions' calls when it stops (stack.IAM_USES_DIR); tests/iam checks them against the
    # template's grants after the suite.
    os.environ["AGENT_RECORD_IAM_USES"] = "1"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--large"):
        return
    skip = pytest.mark.skip(reason="largest-account run: `make test-large`")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
