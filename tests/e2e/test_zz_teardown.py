"""Runs last: `down` leaves nothing behind — no process, mount, bridge, iptables chain, cgroup or state."""

from __future__ import annotations

import subprocess

import pytest

from support.cluster import LOCALCLUSTER, STATE, facts


def test_down_leaves_nothing_behind() -> None:
    if not STATE.started_by_tests:
        pytest.skip("this run reused a cluster it did not start, so it leaves that cluster running")
    subprocess.run([*LOCALCLUSTER, "down"], check=True)
    after = facts()
    assert STATE.before is not None
    for key, value in after.items():
        assert value == STATE.before[key], f"{key} after down differs from before up: {value!r}"
    assert after["processes"] == [] and after["state_dirs"] == [] and after["mounts"] == []
