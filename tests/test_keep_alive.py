"""keep_alive as Ollama spells it (fleet.keep_alive): seconds, durations, never; and what is
not a duration is refused with its value named, at the launch and at the command line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet.errors import BadRequest
from fleet.keep_alive import describe_keep_alive, parse_keep_alive
from fleet.launch_request import LaunchRequest
from fleet.server_config import ServerConfig


@pytest.mark.parametrize(("value", "seconds"), [
    (300, 300.0), (2.5, 2.5), ("45", 45.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0),
    ("1h30m", 5400.0), ("500ms", 0.5), (" 2H ", 7200.0), ("0", 0.0), (0, 0.0),
    ("-1", None), (-1, None), ("-5m", None), (None, None),
])
def test_durations_as_ollama_reads_them(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "10 minutes", "1d", "m", "", "1h-5m", True,
                                   float("nan"), float("inf"), [5], "9" * 50, 400 * 24 * 3600])
def test_what_is_not_a_duration_is_refused_naming_it(value):
    with pytest.raises(BadRequest) as refused:
        parse_keep_alive(value)
    assert refused.value.code == "invalid_keep_alive" and refused.value.status_code == 400


def test_launches_and_the_server_refuse_a_bad_one_and_keep_a_good_one_as_written():
    assert LaunchRequest(model_name="m", keep_alive="10m").keep_alive == "10m"
    with pytest.raises(ValidationError, match="keep_alive 'soon' is not a duration"):
        LaunchRequest(model_name="m", keep_alive="soon")
    assert ServerConfig(keep_alive="1h").keep_alive == "1h"
    with pytest.raises(ValidationError, match="not a duration"):
        ServerConfig(keep_alive="later")


def test_durations_read_back_for_people():
    assert [describe_keep_alive(s) for s in (None, 0.0, 45.0, 600.0, 5400.0)] == \
        ["never", "0s", "45s", "10m", "1h30m"]
