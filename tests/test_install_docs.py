"""Every extra that the README, the docs, CI and Fleet's own install hints name exists, spelt
as the built metadata spells it: pip before 24 looks an extra up by the name as typed, so a
hint that names `sentence_transformers` when the metadata says `sentence-transformers` installs
no engine and only warns."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import tomllib

from fleet.engines.registry import ENGINES
from fleet.install_hint import pip_install_extra

ROOT = Path(__file__).resolve().parent.parent
# `".[a,b]"`, `'/path[a]'`, `fleet-serve[a]`: the bracket after a package or a path.
_EXTRAS_IN_COMMAND = re.compile(r"""(?:fleet-serve|["'](?:\.|/[^"'\s\[\]]*))\[([A-Za-z0-9_.,\- ]+)\]""")
# Prose names an extra as `[name]`.
_EXTRA_IN_PROSE = re.compile(r"`\[([a-z0-9_,\-]+)\]`")


def declared_extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["optional-dependencies"])


def _named(text: str) -> set[str]:
    names = set()
    for pattern in (_EXTRAS_IN_COMMAND, _EXTRA_IN_PROSE):
        for match in pattern.finditer(text):
            names.update(n.strip() for n in match.group(1).split(","))
    return names


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / ".ci" / "run", ROOT / "pyproject.toml",
            *sorted((ROOT / "docs").rglob("*.md"))]


def test_extra_names_need_no_normalising():
    for name in declared_extras():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_only_extras_that_exist(path):
    text = path.read_text()
    named = _named(text)
    if path.name in ("README.md", "run"):
        assert named, f"{path.name} names no extra: the pattern no longer matches its commands"
    assert named <= declared_extras(), f"{path.name} names {sorted(named - declared_extras())}"


def test_readme_install_commands_name_extras_that_exist():
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if "pip install" in line]
    assert any('".[sentence-transformers]"' in line for line in commands)
    for line in commands:
        assert _named(line) <= declared_extras(), line


def test_every_engine_hint_names_an_extra_that_exists():
    for engine in ENGINES:
        assert engine.pip_extra in declared_extras(), engine.name
        missing = dataclasses.replace(engine, requires=("fleet_no_such_module",))
        hint = missing.unavailable()
        assert hint and pip_install_extra(engine.pip_extra) in hint
        assert _named(hint) == {engine.pip_extra}, hint


def test_hint_installs_the_checkout_with_its_constraints():
    hint = pip_install_extra("llama-cpp")
    assert f"-c {ROOT / 'constraints.txt'}" in hint
    assert f"{ROOT}[llama-cpp]" in hint


def test_source_code_names_only_extras_that_exist():
    for path in (ROOT / "fleet").rglob("*.py"):
        named = _named(path.read_text())
        assert named <= declared_extras(), f"{path} names {sorted(named - declared_extras())}"
