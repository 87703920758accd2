"""The worker's room: WorkerActor (actor.py), one per machine: its resources, its link to the
supervisor (joins, heartbeats, finding a restarted one), and the watch over its replicas'
processes and what they start (replica_watch, process_tree). It may import the replica's room
(it creates replicas by their actor class), the weights room and the shared modules of
fleet/cluster; never the supervisor's room (it finds the supervisor by its uid,
fleet/cluster/actor_uids.py) nor the API."""
