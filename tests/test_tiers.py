"""The tiers of the suite (the markers that tests/conftest.py sets by folder) hold what they say:
the in-process tier starts no Fleet process, and every folder or module named exists."""

from __future__ import annotations

import re

from tests.conftest import FOLDER_NEEDS, MODULE_NEEDS, TESTS

# What starts a real Fleet process in a test: the process helper, the cluster fixtures, the CLI.
_STARTS_FLEET = re.compile(r"FleetProcess\(|\blocal_cluster\b|start_local\(|\"-m\", \"fleet\"")


def _in_process_modules() -> list[str]:
    cluster_folders = {name for name, needs in FOLDER_NEEDS.items() if "cluster" in needs}
    return [path.relative_to(TESTS).as_posix() for path in TESTS.rglob("test_*.py")
            if path.relative_to(TESTS).parts[0] not in cluster_folders]


def test_the_in_process_tier_starts_no_fleet_process():
    modules = _in_process_modules()
    assert len(modules) > 30  # the tier is the bulk of the unit tests, not an empty set
    # The pattern is not blind: it finds the cluster folders' own starts.
    assert all(_STARTS_FLEET.search(p.read_text()) for p in (TESTS / "e2e").glob("test_local*.py"))
    starting = [m for m in modules if m not in MODULE_NEEDS or "cluster" not in MODULE_NEEDS[m]
                if _STARTS_FLEET.search((TESTS / m).read_text())]
    assert starting == [], f"mark these modules 'cluster' in tests/conftest.py: {starting}"


def test_every_folder_and_module_given_needs_exists():
    missing = [name for name in FOLDER_NEEDS if not (TESTS / name).is_dir()]
    missing += [name for name in MODULE_NEEDS if not (TESTS / name).is_file()]
    assert missing == []
