"""The supervisor's room: SupervisorActor (actor.py) and what it keeps and decides: the workers and
models it knows, launch plans and placement (with the memory estimate), scaling, restore after a
restart, the weights caches seen across workers, and the route events the API follows. It may
import the weights room and the shared modules of fleet/cluster (actor_uids, deadlines); never
the worker's or a replica's room, nor the API: it reaches workers and replicas through actor
references only."""
