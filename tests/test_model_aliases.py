"""Alias names and who may hold them (fleet.model_aliases), without a cluster."""

from __future__ import annotations

import pytest

from fleet.errors import BadRequest
from fleet.launch_request import LaunchRequest
from fleet.model_aliases import MAX_ALIASES, check_alias_names, check_aliases_free


def test_names_clients_send_are_aliases_in_order_without_repeats():
    names = ["gpt-4o", "claude-sonnet-4-5", "org/model:tag", "llama3.1@q4", "gpt-4o"]
    assert check_alias_names(names) == names[:4]


@pytest.mark.parametrize("name", ["", " gpt", "has space", "-lead", "a\nb", "x" * 201, "ümlaut",
                                  "estimate", "instances"])
def test_a_name_that_is_not_a_model_name_is_refused_by_name(name):
    with pytest.raises(ValueError, match="alias"):
        check_alias_names([name])


def test_the_launch_body_checks_its_aliases():
    assert LaunchRequest(model_name="m", aliases=["a", "a", "b"]).aliases == ["a", "b"]
    with pytest.raises(ValueError, match="aliases"):
        LaunchRequest(model_name="m", aliases=[f"a{i}" for i in range(MAX_ALIASES + 1)])
    with pytest.raises(ValueError, match="aliases"):
        LaunchRequest(model_name="m", aliases=["no spaces"])


def test_an_alias_names_one_model_and_never_a_uid():
    taken = {"gpt-4o": "one"}
    check_aliases_free("one", ["gpt-4o", "new"], ["two"], taken)  # its own alias, kept
    with pytest.raises(BadRequest, match="already names model 'one'") as other:
        check_aliases_free("two", ["gpt-4o"], ["one"], taken)
    assert other.value.code == "alias_taken"
    with pytest.raises(BadRequest, match="uid of a running model"):
        check_aliases_free("two", ["one"], ["one"], taken)
    with pytest.raises(BadRequest, match="uid of a running model"):
        check_aliases_free("two", ["two"], [], {})
