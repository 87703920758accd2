"""Autoscaling's settings and its rule, pure: given a model's load as its replicas count it, and
the time, how many replicas it should have. The supervisor feeds it
(fleet.cluster.supervisor.autoscaler); tests drive it with a clock of their own.

The rule:
- up when the requests in flight (running plus queued, as each replica counts them) per
  replica have stayed above `target_inflight` for `scale_up_delay`: to as many replicas as the
  load needs at the target (in flight / target, rounded up; at least one more), all started
  together. A wave that needs three replicas where one serves would otherwise wait for a
  replica, then a delay, then another replica, each start slowed by the wave itself;
- down, one at a time, only when the load would fit in one replica fewer (in flight <= target
  times one replica fewer) for `scale_down_delay`, which is longer: a wave that ebbs for a
  moment does not cost a replica that the next one needs again;
- to zero only when `min_replicas` is 0, and only when no request at all was answered for
  `scale_down_delay` (a load of quick requests may read 0 in flight at every look);
- never below `min_replicas` nor above `max_replicas`: a model outside them (its bounds were
  changed) is brought back within them at once.

A condition must hold at every look for the whole delay: one look that breaks it starts the wait
again. After each decision both waits start again, so the next step waits for the new replica's
effect.

It lives outside fleet.cluster because the launch request checks the settings too (arrows point
api -> cluster)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fleet.errors import BadRequest
from fleet.limits import MAX_REPLICAS

# The launch fields (and `POST /v1/models/{uid}/autoscale`'s) that autoscaling reads.
AUTOSCALE_FIELDS = ("min_replicas", "max_replicas", "target_inflight", "scale_up_delay",
                    "scale_down_delay")

# Requests in flight per replica above which a model gets another replica, when the launch
# names none, per model type. What a replica counts is what it holds: running plus queued
# (ModelActor.in_progress). An LLM replica decodes its sequences together (llama.cpp's 16 slots
# by default, a Transformers or vLLM batch of similar size): 8 in flight keeps its batch busy
# while half of its room is left for a burst before latency climbs. An embedding or rerank
# request is short and batched dynamically: 16 waiting requests are one or two batches, past
# which a request waits for more than its own batch. Image, audio and OCR replicas run one or
# two requests at a time: two in flight already means one waits for the whole of another's run.
DEFAULT_TARGET_INFLIGHT = {"LLM": 8.0, "embedding": 16.0, "rerank": 16.0}
DEFAULT_TARGET_OTHER = 2.0
DEFAULT_SCALE_UP_DELAY_S = 5.0
DEFAULT_SCALE_DOWN_DELAY_S = 60.0
MAX_DELAY_S = 86_400.0


@dataclass(frozen=True)
class AutoscaleSettings:
    min_replicas: int
    max_replicas: int
    target_inflight: float
    scale_up_delay: float = DEFAULT_SCALE_UP_DELAY_S
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY_S

    @classmethod
    def of(cls, request: dict[str, Any], model_type: str) -> AutoscaleSettings | None:
        """A model's settings from its launch request; None when it is not autoscaled (it names
        neither bound: it keeps the replicas it was given)."""
        if request.get("min_replicas") is None and request.get("max_replicas") is None:
            return None
        replica = int(request.get("replica") or 1)
        low = request.get("min_replicas")
        low = 1 if low is None else int(low)
        high = request.get("max_replicas")
        high = max(replica, low, 1) if high is None else int(high)
        target = request.get("target_inflight")
        if target is None:
            target = DEFAULT_TARGET_INFLIGHT.get(model_type, DEFAULT_TARGET_OTHER)
        up, down = request.get("scale_up_delay"), request.get("scale_down_delay")
        return cls(low, high, float(target),
                   DEFAULT_SCALE_UP_DELAY_S if up is None else float(up),
                   DEFAULT_SCALE_DOWN_DELAY_S if down is None else float(down))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in AUTOSCALE_FIELDS}


def check_autoscale(fields: dict[str, Any]) -> None:
    """The bounds together (each field's own type and range is the caller's pydantic model's):
    BadRequest naming the field that is out of place. `fields` may hold `replica`, the count
    the model starts with (or is saved with), which must lie within the bounds."""
    low, high = fields.get("min_replicas"), fields.get("max_replicas")
    replica = fields.get("replica")
    if low is not None and high is not None and low > high:
        raise _invalid(f"min_replicas ({low}) must not exceed max_replicas ({high})")
    if high is not None and not 1 <= high <= MAX_REPLICAS:
        raise _invalid(f"max_replicas must be between 1 and {MAX_REPLICAS}, not {high}")
    if low is not None and not 0 <= low <= MAX_REPLICAS:
        raise _invalid(f"min_replicas must be between 0 and {MAX_REPLICAS}, not {low}")
    if replica is not None and high is not None and replica > high:
        raise _invalid(f"replica ({replica}) must not exceed max_replicas ({high})")
    if replica is not None and low is not None and replica < low:
        raise _invalid(f"replica ({replica}) must be at least min_replicas ({low})")


def _since(started: float | None, now: float) -> float:
    return now if started is None else started


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_autoscale")


@dataclass(frozen=True)
class Load:
    """One look at a model: its replicas (loaded, not draining), the requests they hold (running
    plus queued), and the requests they have answered so far."""

    replicas: int
    in_flight: int
    served: int


@dataclass(frozen=True)
class Decision:
    kind: str  # "scale_up" or "scale_down"
    to: int
    reason: str


class ScaleRule:
    """The rule for one model, fed one look at a time (`decide`), with its own memory of how
    long each condition has held. `now`: seconds on any monotonic clock."""

    def __init__(self) -> None:
        self._above_since: float | None = None
        self._fits_since: float | None = None
        self._idle_since: tuple[int, float] | None = None  # (requests served, since when)

    def reset(self) -> None:
        """Forget what has been seen: a change is under way, or the model was not looked at."""
        self._above_since = self._fits_since = self._idle_since = None

    def decide(self, settings: AutoscaleSettings, load: Load, now: float) -> Decision | None:
        bounded = self._within_bounds(settings, load.replicas)
        if bounded is not None:
            self.reset()
            return bounded
        self._track(settings, load, now)
        decision = self._due(settings, load, now)
        if decision is not None:
            self.reset()
        return decision

    def _within_bounds(self, settings: AutoscaleSettings, n: int) -> Decision | None:
        if 0 < n < settings.min_replicas:
            return Decision("scale_up", n + 1, f"{n} replica(s), below min_replicas "
                                               f"{settings.min_replicas}")
        if n > settings.max_replicas:
            return Decision("scale_down", n - 1, f"{n} replica(s), above max_replicas "
                                                 f"{settings.max_replicas}")
        return None

    def _track(self, settings: AutoscaleSettings, load: Load, now: float) -> None:
        n, target = load.replicas, settings.target_inflight
        above = n > 0 and load.in_flight > target * n
        self._above_since = _since(self._above_since, now) if above else None
        fits = n > 1 and load.in_flight <= target * (n - 1)
        self._fits_since = _since(self._fits_since, now) if fits else None
        quiet = n == 1 and load.in_flight == 0
        if not quiet:
            self._idle_since = None
        elif self._idle_since is None or self._idle_since[0] != load.served:
            self._idle_since = (load.served, now)  # a request answered since: quiet from now

    def _due(self, settings: AutoscaleSettings, load: Load, now: float) -> Decision | None:
        n, target = load.replicas, settings.target_inflight
        if (self._above_since is not None and now - self._above_since >= settings.scale_up_delay
                and n < settings.max_replicas):
            needed = max(n + 1, math.ceil(load.in_flight / target))
            return Decision("scale_up", min(needed, settings.max_replicas),
                            f"{load.in_flight} requests in flight on {n} replica(s), above "
                            f"{target:g} per replica for {settings.scale_up_delay:g}s")
        if (self._fits_since is not None and now - self._fits_since >= settings.scale_down_delay
                and n > max(settings.min_replicas, 1)):
            return Decision("scale_down", n - 1,
                            f"{load.in_flight} requests in flight fit in {n - 1} replica(s) at "
                            f"{target:g} each for {settings.scale_down_delay:g}s")
        if (self._idle_since is not None and settings.min_replicas == 0
                and now - self._idle_since[1] >= settings.scale_down_delay):
            return Decision("scale_down", 0, f"no request for {settings.scale_down_delay:g}s "
                                             "and min_replicas 0")
        return None
