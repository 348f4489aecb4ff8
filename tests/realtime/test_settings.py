"""Settings from the environment that have no better home: the replica wait."""

from __future__ import annotations

import pytest

from realtime.settings import Settings


def test_the_replica_wait_is_off_by_default_and_read_from_the_environment() -> None:
    assert (Settings.from_env({}).wait_replicas, Settings.from_env({}).wait_timeout_ms) == (0, 100)
    settings = Settings.from_env({"REKINDLE_WAIT_REPLICAS": "1", "REKINDLE_WAIT_TIMEOUT_MS": "250"})
    assert (settings.wait_replicas, settings.wait_timeout_ms) == (1, 250)
    assert Settings.from_env(settings.worker_env()).wait_replicas == 1  # workers see the same


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REKINDLE_WAIT_REPLICAS": "-1"}, "REKINDLE_WAIT_REPLICAS"),
        ({"REKINDLE_WAIT_REPLICAS": "one"}, "REKINDLE_WAIT_REPLICAS"),
        ({"REKINDLE_WAIT_TIMEOUT_MS": "0"}, "REKINDLE_WAIT_TIMEOUT_MS"),
    ],
)
def test_a_replica_wait_that_cannot_work_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)
