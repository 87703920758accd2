"""The names the cluster's singleton actors are found by, in a module of their own: a worker
finds its supervisor by name, and must not import the supervisor's code to learn it (the arrow
would run back up, from the worker's side to the supervisor's)."""

SUPERVISOR_UID = "fleet-supervisor"
WORKER_UID = "fleet-worker"
