"""Replicas' live status, asked of their own processes (`GET /v1/models/{uid}/replicas`, the
launch progress, /metrics), with what the supervisor knows where a process does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import xoscar as xo

from fleet.cluster.deadlines import within
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord

# A replica busy loading or answering still answers a status call at once; one that takes
# longer is stuck, and the page asking must not wait for it.
_STATUS_TIMEOUT_S = 5.0


async def of_model(record: ModelRecord) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_live_status(r) for r in record.replicas)))


async def of_every_model(models: Mapping[str, ModelRecord]) -> list[dict[str, Any]]:
    """Every replica's live status, labelled with its model."""
    uids = list(models)
    results = await asyncio.gather(*(of_model(models[uid]) for uid in uids),
                                   return_exceptions=True)
    return [{**row, "model": uid} for uid, rows in zip(uids, results, strict=True)
            if not isinstance(rows, BaseException) for row in rows]


async def _live_status(replica: ReplicaRecord) -> dict[str, Any]:
    row: dict[str, Any] = {**replica.status(), "stage": replica.state,
                           "progress": 1.0 if replica.state == "ready" else 0.0}
    if replica.actor_address and replica.state in ("launching", "ready", "draining"):
        try:
            ref = await within(xo.actor_ref(address=replica.actor_address,
                                            uid=replica.actor_uid),
                               _STATUS_TIMEOUT_S, f"replica {replica.replica_uid}")
            live = await within(ref.status(), _STATUS_TIMEOUT_S,
                                f"replica {replica.replica_uid}")
            # The supervisor's state stands (a replica restarting is not "ready").
            row.update({k: v for k, v in live.items() if k not in ("state", "error")})
        except Exception as exc:
            row["status_error"] = str(exc)
    return row
