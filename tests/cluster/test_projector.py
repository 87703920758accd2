"""Vision projectors of GGUF models (fleet.cluster.weights.projector): the catalogue's list of a
spec's projector files (Xinference's `multimodal_projectors`), the `multimodal_projector` launch
option and its checks (a file name of the weights' folder, or a local path the launch policy
checks like a model_path), which one a launch loads, where it is found, its download from the
hub (a stand-in on loopback) into the weights' cache folder, and its size in the estimate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.catalogue.registry import Catalogue, parse_family
from fleet.cluster.supervisor.launch_plan import plan_launch
from fleet.cluster.supervisor.launch_policy import LaunchPolicy
from fleet.cluster.supervisor.memory_estimate import estimate_memory
from fleet.cluster.weights import download
from fleet.cluster.weights.projector import (
    check_projector_choice,
    resolve_projector,
    wanted_projector,
    with_projector,
)
from fleet.engines.launch_options import LlamaCppLLMOptions, validate_options
from fleet.engines.registry import engine_by_name
from fleet.errors import BadRequest, Forbidden
from fleet.paths import SAFE_NAME_RULE
from tests.fake_hub import FakeHub

REPO = "example/tiny-vision-GGUF"
PROJECTORS = ["mmproj-tiny-f16.gguf", "mmproj-tiny-f32.gguf"]
WEIGHTS = "tiny-vision-{quantization}.gguf"
never = lambda fraction: pytest.fail("no download expected")  # noqa: E731


def _family(abilities: tuple[str, ...] = ("chat", "vision"), **source: Any) -> Any:
    """A vision family in Xinference's catalogue shape: the projectors listed per hub."""
    return parse_family("LLM", {
        "version": 2, "model_name": "tiny-vision", "model_ability": list(abilities),
        "context_length": 1024, "model_lang": ["en"],
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": 1, "model_src": {
            "huggingface": {"quantizations": ["Q4_K_M"], "model_id": REPO,
                            "model_file_name_template": WEIGHTS,
                            "multimodal_projectors": PROJECTORS, **source}}}]})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "cache").mkdir(parents=True)
    return tmp_path / "home"


def test_the_catalogue_lists_a_specs_projectors_and_refuses_unsafe_names():
    family = _family()
    spec = family.model_specs[0]
    assert spec.model_format == "gguf" and spec.multimodal_projectors == PROJECTORS
    again = parse_family("LLM", family.model_dump())
    assert again.model_specs[0].multimodal_projectors == PROJECTORS
    for hostile in ("../../../../etc/passwd", "/etc/passwd", ".hidden.gguf", "a/../../b.gguf"):
        with pytest.raises(BadRequest) as refused:
            _family(multimodal_projectors=[hostile])
        assert "multimodal_projectors" in refused.value.message, hostile


def _options(**options: Any) -> dict[str, Any]:
    engine = engine_by_name("llama.cpp")
    return validate_options(engine.options_model("LLM"), options, "llama.cpp")


def test_the_launch_option_takes_a_file_name_or_a_local_path_and_nothing_else():
    for name in ("mmproj-tiny-f16.gguf", "vision/mmproj.gguf", "/models/mmproj.gguf",
                 "file:///models/mmproj.gguf", ""):
        assert _options(multimodal_projector=name) == {"multimodal_projector": name}
    assert _options(image_min_tokens="64", image_max_tokens=1024) == {
        "image_min_tokens": 64, "image_max_tokens": 1024}
    for hostile in ("../mmproj.gguf", "a/../../mmproj.gguf", ".mmproj", "..", "x\x00.gguf",
                    "C:\\mmproj.gguf", "a/b/c/d.gguf"):
        with pytest.raises(BadRequest) as refused:
            _options(multimodal_projector=hostile)
        assert refused.value.code == "invalid_launch_option", hostile
        assert "multimodal_projector" in refused.value.message
    with pytest.raises(BadRequest, match="image_max_tokens"):
        _options(image_max_tokens=0)
    assert SAFE_NAME_RULE in _refusal_text("../x.gguf")


def _refusal_text(name: str) -> str:
    with pytest.raises(BadRequest) as refused:
        _options(multimodal_projector=name)
    return refused.value.message


def test_a_vision_launch_loads_the_first_listed_projector_unless_it_names_another_or_none():
    family = _family()
    spec = family.model_specs[0]
    assert wanted_projector(family, spec, LlamaCppLLMOptions()) == PROJECTORS[0]
    assert wanted_projector(family, spec, {"multimodal_projector": PROJECTORS[1]}) == PROJECTORS[1]
    assert wanted_projector(family, spec, LlamaCppLLMOptions(multimodal_projector="")) is None
    text_only = _family(abilities=("chat",))
    assert wanted_projector(text_only, text_only.model_specs[0], LlamaCppLLMOptions()) is None


def test_a_projector_is_found_beside_local_weights_or_by_its_own_path(tmp_path: Path):
    family = _family()
    spec = family.model_specs[0]
    weights = tmp_path / "tiny-vision-Q4_K_M.gguf"
    weights.write_bytes(b"GGUF")
    projector = tmp_path / PROJECTORS[1]
    projector.write_bytes(b"GGUF")
    # A model_path that is the folder or the weights' file: the projector is looked for there.
    for model_path in (str(tmp_path), str(weights), f"file://{tmp_path}"):
        assert resolve_projector(family, spec, "Q4_K_M", model_path, PROJECTORS[1],
                                 never) == projector
    assert resolve_projector(family, spec, "Q4_K_M", None, str(projector), never) == projector
    with pytest.raises(BadRequest) as missing:
        resolve_projector(family, spec, "Q4_K_M", str(tmp_path), PROJECTORS[0], never)
    assert missing.value.code == "no_projector" and PROJECTORS[0] in missing.value.message
    with pytest.raises(BadRequest, match="not a file on this worker"):
        resolve_projector(family, spec, "Q4_K_M", str(tmp_path), str(tmp_path / "gone.gguf"),
                          never)
    # The options the engine gets hold the file itself, or "" for none.
    options = with_projector(family, spec, "Q4_K_M", str(tmp_path),
                             LlamaCppLLMOptions(multimodal_projector=PROJECTORS[1]), never)
    assert isinstance(options, LlamaCppLLMOptions)
    assert options.multimodal_projector == str(projector)
    none = with_projector(family, spec, "Q4_K_M", str(tmp_path),
                          LlamaCppLLMOptions(multimodal_projector=""), never)
    assert isinstance(none, LlamaCppLLMOptions) and none.multimodal_projector == ""


def test_a_hub_models_projector_downloads_beside_its_weights_once(home: Path, tmp_path: Path,
                                                                 monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECTORS:
        (repo / name).write_bytes(b"GGUF" + name.encode() * 100)
    family = _family()
    spec = family.model_specs[0]
    with FakeHub({REPO: repo}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        # huggingface_hub reads both when it is first imported, which an earlier test of the
        # session may have done: its constants are set too (a worker starts with them set).
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        path = resolve_projector(family, spec, "Q4_K_M", None, PROJECTORS[1], lambda f: None)
        assert path == download.cache_folder(family, spec, "Q4_K_M") / PROJECTORS[1]
        assert path.read_bytes() == (repo / PROJECTORS[1]).read_bytes()
        asked = len(hub.requests)
        assert resolve_projector(family, spec, "Q4_K_M", None, PROJECTORS[1], never) == path
        assert len(hub.requests) == asked  # found in the cache: the hub is not asked again


def test_a_hub_models_projector_must_be_one_it_lists():
    spec = _family().model_specs[0]
    check_projector_choice(spec, PROJECTORS[1], from_hub=True)
    check_projector_choice(spec, "/models/own.gguf", from_hub=True)
    check_projector_choice(spec, "own.gguf", from_hub=False)  # a local folder holds what it holds
    with pytest.raises(BadRequest) as refused:
        check_projector_choice(spec, "mmproj-other.gguf", from_hub=True)
    assert refused.value.code == "unknown_projector" and PROJECTORS[0] in refused.value.message


def test_launch_planning_checks_the_projector_like_a_model_path(home: Path, tmp_path: Path):
    catalogue = Catalogue()
    catalogue.register("LLM", _family().model_dump(), persist=False)
    request = {"model_name": "tiny-vision", "model_type": "LLM", "model_engine": "llama.cpp"}
    with pytest.raises(BadRequest, match="not one of this model's projectors"):
        plan_launch(catalogue, [], [], {**request, "multimodal_projector": "mmproj-x.gguf"},
                    place=False)
    exposed = LaunchPolicy(from_network=True, listen="0.0.0.0")
    for outside in ("/etc/passwd", "file:///etc/passwd", str(tmp_path / "mmproj.gguf")):
        with pytest.raises(Forbidden) as refused:
            plan_launch(catalogue, [], [], {**request, "multimodal_projector": outside}, exposed,
                        place=False)
        assert "multimodal_projector" in refused.value.message and "--model-root" in \
            refused.value.message
    inside_cache = str(home / "cache" / "mmproj.gguf")
    plan = plan_launch(catalogue, [], [], {**request, "multimodal_projector": inside_cache},
                       exposed, place=False)
    assert plan.request["multimodal_projector"] == inside_cache
    plan_launch(catalogue, [], [], {**request, "multimodal_projector": PROJECTORS[1]}, exposed,
                place=False)


def test_the_estimate_counts_a_local_projector_with_the_weights(tmp_path: Path):
    family = _family()
    spec = family.model_specs[0]
    weights = tmp_path / "tiny-vision-Q4_K_M.gguf"
    weights.write_bytes(b"x" * 1000)
    (tmp_path / PROJECTORS[0]).write_bytes(b"x" * 300)
    engine = engine_by_name("llama.cpp")
    seeing = estimate_memory(family, spec, "Q4_K_M", engine, "cpu", {"model_path": str(tmp_path)})
    blind = estimate_memory(family, spec, "Q4_K_M", engine, "cpu",
                            {"model_path": str(tmp_path), "multimodal_projector": ""})
    assert seeing.inputs["projector_bytes"] == 300 and "projector_bytes" not in blind.inputs
    assert seeing.weights is not None and blind.weights is not None
    assert seeing.weights - blind.weights == 300


def test_every_gguf_spec_of_a_builtin_vision_family_lists_its_projector():
    from fleet.catalogue.registry import builtin_families

    specs = [(name, spec) for name, family in builtin_families("LLM").items()
             if "vision" in family.abilities for spec in family.model_specs
             if spec.model_format == "gguf"]
    assert specs
    for name, spec in specs:
        assert spec.multimodal_projectors, (name, spec.model_id)
        assert all(p.startswith("mmproj") and p.endswith(".gguf")
                   for p in spec.multimodal_projectors), (name, spec.multimodal_projectors)
