"""Model weights on a machine's disk: downloading them (download), what a worker's cache holds
(cache_inventory), and what the weights say about themselves (weights_info). It imports no other
room of fleet/cluster; the supervisor, the worker, the replica and the API read it."""
