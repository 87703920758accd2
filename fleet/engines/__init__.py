"""Engines run models. They know nothing of the cluster: a ModelActor hosts one and calls it.
Declarations (what an engine can run) live in `registry`; implementations are imported only in
the model's own process."""
