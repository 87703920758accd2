"""A FLEET_HOME as Fleet 0.1 left it (before the database): its files, written by that release
itself (`fleet register`, `POST /v1/models`) and kept in home_0_1_0/, with the path of the
MiniLM weights, which differs from machine to machine, put back where it was."""

from __future__ import annotations

import json
from pathlib import Path

FILES = Path(__file__).with_name("home_0_1_0")
REGISTRATIONS = {("embedding", "team-minilm"), ("LLM", "team-llm")}
MODELS = {"team-embed", "auto-embed"}


def write_previous_release_home(home: Path, minilm_path: str) -> None:
    for source in FILES.rglob("*.json"):
        target = home / source.relative_to(FILES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text().replace("@MINILM@", minilm_path))


def previous_release_models(minilm_path: str) -> dict:
    return json.loads((FILES / "state" / "models.json").read_text().replace("@MINILM@",
                                                                           minilm_path))


def previous_release_registration(model_type: str, name: str, minilm_path: str) -> dict:
    path = FILES / "registrations" / model_type / f"{name}.json"
    return json.loads(path.read_text().replace("@MINILM@", minilm_path))
