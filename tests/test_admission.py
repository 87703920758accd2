"""Admission to a replica's queues (fleet.admission): the count, the refusal past the limit, the
release, and the request limits read from a launch."""

from __future__ import annotations

import dataclasses

import pytest

from fleet.admission import DEFAULT_REQUEST_LIMIT, Admission, RequestLimits
from fleet.errors import BadRequest, TooManyRequests


def test_admits_up_to_the_limit_and_refuses_the_next_with_a_429():
    admission = Admission(2)
    admission.admit()
    admission.admit()
    with pytest.raises(TooManyRequests) as refused:
        admission.admit()
    error = refused.value
    assert error.status_code == 429 and error.retry_after_s == 1 and error.code == "model_busy"
    assert "already has 2 requests in progress" in error.message
    assert "limit is 2" in error.message and "request_limits" in error.message
    assert admission.in_progress == 2  # the refused request took no place


def test_a_release_makes_room_for_exactly_one_more():
    admission = Admission(1)
    admission.admit()
    admission.release()
    assert admission.in_progress == 0
    admission.admit()
    with pytest.raises(TooManyRequests):
        admission.admit()


def test_releasing_more_than_was_admitted_never_opens_room_past_the_limit():
    admission = Admission(2)
    admission.admit()
    for _ in range(5):  # a request both cancelled and finished, released again and again
        admission.release()
    assert admission.in_progress == 0
    admission.admit()
    admission.admit()
    with pytest.raises(TooManyRequests):
        admission.admit()
    assert admission.in_progress == 2


def test_as_a_context_manager_it_releases_however_the_block_ends():
    admission = Admission(1)
    with pytest.raises(ValueError), admission:
        assert admission.in_progress == 1
        raise ValueError("the request failed")
    assert admission.in_progress == 0
    with admission:
        # Refused on entry: nothing was taken, so leaving must give nothing back.
        with pytest.raises(TooManyRequests), admission:
            pass
        assert admission.in_progress == 1
    assert admission.in_progress == 0


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "3", None])
def test_a_limit_that_is_not_a_whole_number_of_at_least_one_is_refused(limit):
    with pytest.raises(BadRequest, match="at least 1"):
        Admission(limit)


def test_a_subclass_words_its_own_refusal():
    class Bodies(Admission):
        def refusal(self) -> TooManyRequests:
            return TooManyRequests(f"{self.limit} bodies wait", code="parser_busy")

    bodies = Bodies(1)
    bodies.admit()
    with pytest.raises(TooManyRequests, match="1 bodies wait") as refused:
        bodies.admit()
    assert refused.value.code == "parser_busy"


def test_request_limits_from_a_launch_default_when_left_out_or_null():
    assert RequestLimits.of(None).max_requests == DEFAULT_REQUEST_LIMIT == 256
    assert RequestLimits.of(None) == RequestLimits()
    assert RequestLimits.of(3).max_requests == 3


@pytest.mark.parametrize("value", [0, -5, True, "4", 2.0, [4]])
def test_request_limits_refuse_what_is_not_a_whole_number_of_at_least_one(value):
    with pytest.raises(BadRequest, match="request_limits must be") as refused:
        RequestLimits.of(value)
    assert refused.value.status_code == 400


def test_request_limits_cannot_be_changed_once_read():
    limits = RequestLimits(4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_requests = 1000  # type: ignore[misc]
