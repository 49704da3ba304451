"""The state table's Rust module, one concern at a time, against moto's DynamoDB.

`tasks/core/tests/state_store.rs` holds the tests (ignored by a plain `cargo test`, which has no DynamoDB); this
starts a moto server of its own and runs them with `AGENT_TEST_DYNAMODB_URL` pointing at it (as `cargo test
--workspace` built them: the same flags, so nothing is built again).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stack import REPO, free_port, port_open, wait_until

TESTS = 7


def test_each_part_of_the_state_table_against_dynamodb(tmp_path):
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(port), "moto server", 60)
        env = {**os.environ, "AGENT_TEST_DYNAMODB_URL": f"http://127.0.0.1:{port}"}
        run = subprocess.run(["cargo", "test", "--quiet", "--workspace", "--test", "state_store", "--",
                              "--ignored"], cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"test result: ok. {TESTS} passed" in run.stdout, run.stdout
