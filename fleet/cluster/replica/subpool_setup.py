"""The first module a replica's process imports (xoscar's `modules` of a sub-pool), before its
actor pool opens a port: what every process of a cluster needs before it speaks to the others.
A replica's process starts as `python -m xoscar.backends.indigen` and runs no Fleet code of its
own until then."""

from fleet import actor_handshake

actor_handshake.install()
