"""The HTTP routes, one module per group of endpoints; fleet/api/app.py mounts them. They may
import the rest of fleet/api (protocol, auth, routing, errors) and what fleet/api may import;
nothing imports them but the app and tests."""
