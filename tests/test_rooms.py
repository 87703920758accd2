"""Fleet's rooms keep their arrows (docs/architecture.md draws them): a room imports only rooms
below it, so that the cluster never reaches up into the API, a worker never into its supervisor,
and the replica channel belongs to neither of its ends. Every import counts: at the top, inside a
function, or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A room (a package, or the modules directly in one: "fleet.cluster:") -> the rooms its modules
# must not import, and why.
FORBIDDEN: dict[str, tuple[tuple[str, ...], str]] = {
    "fleet.cluster": (("fleet.api",), "the cluster serves the API and never calls into it"),
    "fleet.channel": (("fleet.api", "fleet.cluster", "fleet.database"),
                      "both ends use it; it belongs to neither"),
    "fleet.cluster:": (("fleet.cluster.supervisor", "fleet.cluster.worker", "fleet.cluster.replica",
                        "fleet.cluster.weights", "fleet.database"),
                       "what every role shares sits below all of them"),
    "fleet.cluster.supervisor": (("fleet.cluster.worker", "fleet.cluster.replica"),
                                 "it reaches workers and replicas by actor references only"),
    "fleet.cluster.worker": (("fleet.cluster.supervisor", "fleet.database"),
                             "it finds its supervisor by uid (fleet.cluster.actor_uids), and may "
                             "run where the state's database cannot be reached"),
    "fleet.cluster.replica": (("fleet.cluster.supervisor", "fleet.cluster.worker", "fleet.database"),
                              "a replica answers to its worker through actor calls"),
    "fleet.cluster.replica.services": (("fleet.cluster.replica.model_actor",),
                                       "the replica's actor holds its services, not the reverse"),
    "fleet.cluster.weights": (("fleet.cluster.supervisor", "fleet.cluster.worker",
                               "fleet.cluster.replica", "fleet.channel", "fleet.database"),
                              "every role reads the weights; they read no role"),
    "fleet.api": (("fleet.cluster.supervisor", "fleet.cluster.worker", "fleet.cluster.replica"),
                  "it calls the cluster's actors by reference (fleet/api/routing.py)"),
    "fleet.api.protocol": (("fleet.api.routes", "fleet.api.auth", "fleet.cluster", "fleet.channel"),
                           "what crosses the edge is plain data"),
    "fleet.api.auth": (("fleet.api.routes", "fleet.cluster", "fleet.channel"),
                       "routes use auth, not the reverse"),
    # The state's database: the supervisor and the API keep their state there (a catalogue
    # is handed its store, fleet.catalogue.registry.RegistrationStore).
    "fleet.database": (("fleet.api", "fleet.cluster", "fleet.channel"),
                       "the state serves the API and the supervisor, and knows neither"),
    **{library: (("fleet.api", "fleet.cluster", "fleet.channel", "fleet.database"),
                 "they know nothing of the cluster") for library in (
        "fleet.engines", "fleet.generation", "fleet.catalogue")},
    # The core (errors, settings, limits...): fleet.server, which starts the roles, is no part of it.
    "fleet:": (("fleet.api", "fleet.channel", "fleet.cluster.supervisor", "fleet.cluster.worker",
                "fleet.cluster.replica", "fleet.cluster.weights", "fleet.database"),
               "every room imports the core"),
}
ABOVE_THE_ROOMS = {"fleet.server"}
# Packages, so that "fleet.cluster:" means the modules directly in fleet/cluster, not the rooms.
PACKAGES = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fleet").rglob("__init__.py")}


def _within(module: str, room: str) -> bool:
    if room.endswith(":"):  # the package's own modules, not its sub-packages'
        package = room[:-1]
        return module.rpartition(".")[0] == package and module not in PACKAGES
    return module == room or module.startswith(room + ".")


def _fleet_modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / "fleet").rglob("*.py")}


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The Fleet modules and packages that `module` names in its imports, wherever they are."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            named |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in named if name in modules and name != module}


def _violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for room, (forbidden, why) in FORBIDDEN.items():
        for module, names in graph.items():
            if not _within(module, room) or module in ABOVE_THE_ROOMS:
                continue
            found += [f"{module} imports {name}: {room.rstrip(':')} must not import {other} ({why})"
                      for name in sorted(names) for other in forbidden if _within(name, other)]
    return found


def test_rooms_import_only_the_rooms_below_them():
    modules = _fleet_modules()
    graph = {module: _imports(module, path, modules) for module, path in modules.items()}
    assert sum(map(len, graph.values())) > 300  # the imports were read
    # Every room named holds modules, and the rule would see an arrow the wrong way.
    assert all(any(_within(m, room) for m in modules) for room in FORBIDDEN)
    assert all(any(_within(m, other) for m in modules)
               for forbidden, _ in FORBIDDEN.values() for other in forbidden)
    assert _violations({"fleet.cluster.worker.actor": {"fleet.cluster.supervisor.records"}})
    assert _violations({"fleet.cluster.deadlines": {"fleet.cluster.weights.download"}})
    assert _violations({"fleet.cluster.worker.actor": {"fleet.database.engine"}})
    assert _violations({"fleet.database.engine": {"fleet.cluster.supervisor.restore"}})
    assert not _violations({"fleet.cluster.supervisor.actor": {"fleet.database.engine"}})
    assert not _violations({"fleet.cluster.supervisor": {"fleet.cluster.supervisor.actor"}})
    assert not _violations({"fleet.cluster.supervisor.actor": {"fleet.cluster.supervisor"}})
    assert _violations(graph) == []


def test_only_the_app_imports_the_routes():
    """Each route module stands alone: the app mounts them, and no other module (a route
    included) reaches into one."""
    modules = _fleet_modules()
    routes = {m for m in modules if _within(m, "fleet.api.routes") and m != "fleet.api.routes"}
    assert len(routes) > 5
    importers = {module for module, path in modules.items()
                 if _imports(module, path, modules) & routes}
    assert importers == {"fleet.api.app"}
