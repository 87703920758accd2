"""Who may call what: the middleware that checks a request's key (middleware), the keys (keys), the
permission each route needs (permissions), and the guard against cross-site requests from
browsers (request_guard). It may import fleet/api/errors and Fleet's core modules; no route, and
nothing of fleet/cluster."""
