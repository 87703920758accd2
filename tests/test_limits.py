"""The request limits: defaults, read from the environment once, refused with the variable's name
when malformed, and every refusal naming the limit, its value and how to change it."""

from __future__ import annotations

import pytest

from fleet.errors import BadRequest, PayloadTooLarge
from fleet.limits import (
    ENV_VARS,
    RequestLimits,
    check_depth,
    exceeded,
    json_depth,
    read_limits,
    too_large,
)


def test_defaults_and_every_limit_has_its_variable():
    defaults = read_limits({})
    assert defaults == RequestLimits()
    assert (defaults.max_items, defaults.max_n, defaults.max_request_tokens) == (2048, 16, 300_000)
    assert defaults.max_management_body_bytes == 1024 * 1024
    assert set(ENV_VARS) == set(RequestLimits.model_fields)
    assert all(var.startswith("FLEET_MAX_") or var == "FLEET_PARSER_MEMORY_BYTES"
               for var in ENV_VARS.values())


def test_the_environment_sets_them():
    limits = read_limits({"FLEET_MAX_ITEMS": "300", "FLEET_MAX_REQUEST_TOKENS": "1_000_000",
                          "FLEET_MAX_N": " "})
    assert limits.max_items == 300 and limits.max_request_tokens == 1_000_000
    assert limits.max_n == 16  # blank: the default


@pytest.mark.parametrize("value", ["many", "1.5", "0", "-3"])
def test_a_malformed_value_stops_the_server_with_the_variable_named(value):
    with pytest.raises(ValueError) as refused:
        read_limits({"FLEET_MAX_ITEMS": value})
    assert "FLEET_MAX_ITEMS" in str(refused.value)


def test_refusals_name_the_limit_and_how_to_change_it():
    error = exceeded("max_items", "input has 3000 items", "too_many_items")
    assert isinstance(error, BadRequest) and error.code == "too_many_items"
    assert error.message == ("input has 3000 items, more than this server's limit of 2048 "
                             "(FLEET_MAX_ITEMS on the server changes it)")
    big = too_large("max_body_bytes", 70_000_000, cap=1000)
    assert isinstance(big, PayloadTooLarge) and big.status_code == 413
    assert "limit of 1000 (FLEET_MAX_BODY_BYTES" in big.message


def test_json_depth_counts_levels_without_recursion():
    assert [json_depth(v) for v in (1, "x", {}, [1], {"a": []}, [[[{"b": {}}]]])] == [
        0, 0, 1, 1, 2, 5]
    deep: dict = {}
    for _ in range(100_000):  # far past Python's recursion limit
        deep = {"a": deep}
    assert json_depth(deep) == 100_001


def test_a_value_nested_past_the_limit_is_refused_with_the_variable_named():
    check_depth({"a": {"b": [1, 2]}}, "model")
    nested: list = []
    for _ in range(40):
        nested = [nested]
    with pytest.raises(BadRequest) as refused:
        check_depth({"extra": nested}, "model")
    assert refused.value.code == "too_deep"
    assert refused.value.message == ("model is nested 42 levels deep, more than this server's "
                                     "limit of 32 (FLEET_MAX_JSON_DEPTH on the server changes it)")


@pytest.mark.parametrize("value", ["7", "201"])
def test_the_depth_limit_stays_where_pydantic_can_still_serialize(value):
    with pytest.raises(ValueError, match="FLEET_MAX_JSON_DEPTH"):
        read_limits({"FLEET_MAX_JSON_DEPTH": value})
