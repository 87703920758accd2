"""Autoscaling's rule (fleet.autoscale), driven look by look on a clock of the test's own, and
its settings as a launch and `POST /v1/models/{uid}/autoscale` read them."""

from __future__ import annotations

import pytest

from fleet.autoscale import AutoscaleSettings, Decision, Load, ScaleRule, check_autoscale
from fleet.errors import BadRequest
from fleet.launch_request import checked_launch

SETTINGS = AutoscaleSettings(min_replicas=1, max_replicas=3, target_inflight=4,
                             scale_up_delay=5, scale_down_delay=60)


def _run(rule: ScaleRule, looks: list[tuple[float, Load]],
         settings: AutoscaleSettings = SETTINGS) -> list[tuple[float, Decision]]:
    decisions = []
    for now, load in looks:
        decision = rule.decide(settings, load, now)
        if decision is not None:
            decisions.append((now, decision))
    return decisions


def _steady(start: float, end: float, load: Load, step: float = 0.5) -> list[tuple[float, Load]]:
    return [(start + i * step, load) for i in range(int((end - start) / step) + 1)]


def test_up_only_after_the_load_stays_above_the_target_for_the_delay():
    rule = ScaleRule()
    decisions = _run(rule, _steady(0, 4.5, Load(replicas=1, in_flight=8, served=0)))
    assert decisions == []  # above for 4.5 s, the delay is 5
    decisions = _run(rule, [(5.0, Load(1, 8, 0))])
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 2)]
    assert "8 requests in flight on 1 replica(s), above 4 per replica for 5s" in decisions[0][1].reason


def test_up_to_as_many_replicas_as_the_load_needs_at_once_within_the_bounds():
    # 9 in flight at 4 each need 3 replicas: both more start together, not one per delay.
    decisions = _run(ScaleRule(), _steady(0, 5, Load(replicas=1, in_flight=9, served=0)))
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 3)]
    # 40 in flight would need 10: max_replicas 3 stands.
    decisions = _run(ScaleRule(), _steady(0, 5, Load(replicas=1, in_flight=40, served=0)))
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 3)]
    # Just above the target on 2 replicas (9 > 8): one more, never none.
    decisions = _run(ScaleRule(), _steady(0, 5, Load(replicas=2, in_flight=9, served=0)))
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 3)]
    wide = AutoscaleSettings(min_replicas=1, max_replicas=8, target_inflight=4,
                             scale_up_delay=5, scale_down_delay=60)
    decisions = _run(ScaleRule(), _steady(0, 5, Load(replicas=2, in_flight=9, served=0)), wide)
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 3)]
    decisions = _run(ScaleRule(), _steady(0, 5, Load(replicas=2, in_flight=21, served=0)), wide)
    assert [(d.kind, d.to) for _, d in decisions] == [("scale_up", 6)]


def test_one_look_at_or_below_the_target_starts_the_wait_again():
    rule = ScaleRule()
    looks = [*_steady(0, 4, Load(1, 8, 0)), (4.5, Load(1, 4, 0)), *_steady(5, 9.5, Load(1, 8, 0))]
    assert _run(rule, looks) == []
    assert [d.to for _, d in _run(rule, [(10.0, Load(1, 8, 0))])] == [2]


def test_each_step_after_its_own_delay_and_never_past_max():
    rule = ScaleRule()
    # A load that grows: 5 in flight needs 2 replicas; then 9 on 2 needs 3, after a new delay.
    decisions = _run(rule, _steady(0, 5, Load(1, 5, 0)) + _steady(5.5, 10.5, Load(2, 9, 0))
                     + _steady(11, 30, Load(3, 100, 0)))
    assert [(t, d.to) for t, d in decisions] == [(5.0, 2), (10.5, 3)]


def test_down_only_when_the_load_fits_in_one_fewer_for_the_longer_delay():
    rule = ScaleRule()
    # 3 replicas, 9 in flight: 9 > 4 * 2, does not fit in two: stays at 3 however long.
    assert _run(rule, _steady(0, 120, Load(3, 9, 0))) == []
    # 8 fits in two (4 each): down after 60 s, then 3 in flight fits in one after 60 s more.
    decisions = _run(rule, _steady(200, 260, Load(3, 8, 0)) + _steady(260.5, 330, Load(2, 3, 0)))
    assert [(t, d.kind, d.to) for t, d in decisions] == [(260.0, "scale_down", 2),
                                                          (320.5, "scale_down", 1)]
    assert "fit in 1 replica(s) at 4 each for 60s" in decisions[1][1].reason


def test_never_below_min_and_to_zero_only_with_min_zero_and_no_request():
    rule = ScaleRule()
    assert _run(rule, _steady(0, 300, Load(1, 0, 7))) == []  # min 1: one stays
    zero = AutoscaleSettings(0, 3, 4, 5, 60)
    rule = ScaleRule()
    # Requests keep being answered (served moves) though none is in flight at any look.
    busy = [(t * 0.5, Load(1, 0, int(t))) for t in range(200)]
    assert _run(rule, busy, zero) == []
    decisions = _run(rule, _steady(100, 160, Load(1, 0, 500)), zero)
    assert [(t, d.to) for t, d in decisions] == [(160.0, 0)]
    assert "no request for 60s and min_replicas 0" in decisions[0][1].reason


def test_a_model_outside_new_bounds_is_brought_back_at_once():
    rule = ScaleRule()
    narrowed = AutoscaleSettings(2, 2, 4, 5, 60)
    assert _run(rule, [(0.0, Load(3, 0, 0))], narrowed)[0][1] == Decision(
        "scale_down", 2, "3 replica(s), above max_replicas 2")
    assert _run(rule, [(0.5, Load(1, 0, 0))], narrowed)[0][1].to == 2


def test_settings_defaults_per_model_type_and_off_without_bounds():
    assert AutoscaleSettings.of({"replica": 2}, "LLM") is None
    llm = AutoscaleSettings.of({"max_replicas": 3}, "LLM")
    assert llm == AutoscaleSettings(1, 3, 8.0, 5.0, 60.0)
    assert AutoscaleSettings.of({"min_replicas": 0}, "embedding") == AutoscaleSettings(
        0, 1, 16.0, 5.0, 60.0)
    assert AutoscaleSettings.of({"min_replicas": 1, "max_replicas": 2}, "image").target_inflight == 2


@pytest.mark.parametrize(("fields", "named"), [
    ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) must not exceed max_replicas (2)"),
    ({"replica": 4, "max_replicas": 3}, "replica (4) must not exceed max_replicas (3)"),
    ({"replica": 1, "min_replicas": 2}, "replica (1) must be at least min_replicas (2)"),
    ({"max_replicas": 65}, "max_replicas must be between 1 and 64"),
])
def test_bounds_checked_together(fields, named):
    with pytest.raises(BadRequest) as refused:
        check_autoscale(fields)
    assert named in refused.value.message


@pytest.mark.parametrize(("fields", "named"), [
    ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) must not exceed"),
    ({"max_replicas": 65}, "max_replicas"),
    ({"min_replicas": -1}, "min_replicas"),
    ({"target_inflight": 0}, "target_inflight"),
    ({"scale_down_delay": -1}, "scale_down_delay"),
    ({"min_replicas": True}, "min_replicas"),
    ({"replica": 4, "max_replicas": 3}, "replica (4) must not exceed max_replicas (3)"),
])
def test_a_launch_refuses_bad_values_naming_the_field(fields, named):
    with pytest.raises(BadRequest) as refused:
        checked_launch({"model_name": "m", **fields})
    assert named in refused.value.message


def test_a_launch_with_a_floor_starts_at_it():
    assert checked_launch({"model_name": "m", "min_replicas": 2, "max_replicas": 3})["replica"] == 2
