"""A replica's room: ModelActor (model_actor.py), one per replica in its own process, and what runs
beside its engine: the dynamic batcher, the continuous-batching generation scheduler, and the
first module of the replica's process (subpool_setup). Each model type's service lives in
services/. It may import fleet/channel (its end of the replica channel), the weights room and
the shared modules of fleet/cluster; never the supervisor's or the worker's room, nor the API."""
