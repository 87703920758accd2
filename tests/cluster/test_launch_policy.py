"""The launch policy (what a cluster reachable from the network refuses), the checks on spec
fields that become paths, and the bounded weights scan of the estimate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet.catalogue.registry import Catalogue, builtin_families, parse_family
from fleet.catalogue.schemas import ModelSpec
from fleet.cluster.supervisor.launch_plan import checked_request, plan_launch
from fleet.cluster.supervisor.launch_policy import LaunchPolicy
from fleet.cluster.weights import download, weights_info
from fleet.engines.registry import engine_by_name
from fleet.errors import BadRequest, Forbidden
from fleet.paths import inside, within
from fleet.server_config import ServerConfig

EXPOSED = LaunchPolicy(from_network=True, listen="0.0.0.0")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "cache").mkdir(parents=True)
    return tmp_path / "home"


def _refused(policy: LaunchPolicy, request: dict) -> Forbidden:
    with pytest.raises(Forbidden) as caught:
        policy.check_request(request)
    assert caught.value.status_code == 403
    return caught.value


# ---- who is "from the network" -----------------------------------------------------------------


@pytest.mark.parametrize(("host", "exposed"), [
    ("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True),
    ("192.0.2.10", True), ("::", True)])
def test_a_cluster_is_exposed_when_its_api_is_not_on_loopback(host, exposed):
    policy = LaunchPolicy.from_config(ServerConfig(host=host))
    assert policy.from_network is exposed
    assert LaunchPolicy.from_config(None).from_network is False


def test_on_loopback_every_launch_keeps_its_freedom(tmp_path):
    policy = LaunchPolicy.from_config(ServerConfig(host="127.0.0.1"))
    policy.check_request({"trust_remote_code": True, "envs": {"LD_PRELOAD": "x.so"},
                          "model_path": "/"})
    policy.check_path("/etc", "model_path")


# ---- the refusals and their messages ------------------------------------------------------------


def _minilm() -> tuple:
    family = builtin_families("embedding")["all-MiniLM-L6-v2"]
    return family, family.model_specs[0]


@pytest.mark.parametrize("value", [True, "true", "1", "yes"])
def test_remote_code_is_refused_and_the_flag_named(home, value):
    family, spec = _minilm()
    with pytest.raises(Forbidden) as caught:
        EXPOSED.check_plan({"trust_remote_code": value}, family, spec, builtin=True,
                           reads_remote_code=True)
    error = caught.value
    assert "trust_remote_code" in error.message and "--allow-remote-code" in error.message
    assert "0.0.0.0" in error.message and error.code == "launch_not_allowed"
    assert error.status_code == 403
    for refused_nothing in (False, "false"):
        EXPOSED.check_plan({"trust_remote_code": refused_nothing}, family, spec, builtin=True,
                           reads_remote_code=True)


def test_remote_code_grants_nothing_on_an_engine_that_runs_no_repository_code(home):
    """Xinference's CLI sends trust_remote_code=true with every launch: a GGUF launch from it
    on llama.cpp is no request to run code, and is not refused for it."""
    family = builtin_families("LLM")["smollm2-instruct"]
    spec = next(s for s in family.model_specs if s.model_format == "gguf")
    EXPOSED.check_request({"trust_remote_code": True})
    EXPOSED.check_plan({"trust_remote_code": True}, family, spec, builtin=True,
                       reads_remote_code=False)


def test_envs_are_refused_and_the_flag_named(home):
    error = _refused(EXPOSED, {"envs": {"PYTHONPATH": "/tmp/evil"}})
    assert "envs" in error.message and "--allow-launch-envs" in error.message
    EXPOSED.check_request({"envs": {}})
    EXPOSED.check_request({"envs": None})


def test_model_paths_outside_the_roots_are_refused_without_saying_if_they_exist(home, tmp_path):
    for path in ("/", "/etc", str(tmp_path), str(tmp_path / "missing"), "file:///etc/passwd"):
        error = _refused(EXPOSED, {"model_path": path})
        assert "--model-root" in error.message and "--allow-any-model-path" in error.message
        assert repr(path) in error.message and str(home / "cache") in error.message
    # A missing path and an existing one get the same answer: no existence oracle.
    missing = _refused(EXPOSED, {"model_path": "/etc/nothing-here"}).message
    present = _refused(EXPOSED, {"model_path": "/etc/hostname"}).message
    assert missing.replace("nothing-here", "hostname") == present


def test_the_cache_and_the_model_roots_are_allowed(home, tmp_path):
    root = tmp_path / "models"
    (root / "minilm").mkdir(parents=True)
    policy = LaunchPolicy(from_network=True, model_roots=(root,))
    policy.check_request({"model_path": str(home / "cache" / "some-model")})
    policy.check_request({"model_path": str(root / "minilm")})
    policy.check_request({"model_path": f"file://{root}/minilm"})
    policy.check_request({"model_path": str(root / "not-yet-there")})
    _refused(EXPOSED, {"model_path": str(root / "minilm")})  # not a root of that policy


def test_dot_dot_and_links_are_resolved_before_the_check(home, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "inner").symlink_to(root)  # a link that stays inside is fine
    policy = LaunchPolicy(from_network=True, model_roots=(root,))
    _refused(policy, {"model_path": str(root / ".." / "secret")})
    _refused(policy, {"model_path": str(root / "link")})
    _refused(policy, {"model_path": str(root / "link" / "sub")})
    policy.check_request({"model_path": str(root / "inner")})
    # A sibling folder whose name starts like the root is not inside it.
    (tmp_path / "models-evil").mkdir()
    _refused(policy, {"model_path": str(tmp_path / "models-evil")})


def test_each_flag_allows_its_own_option_only(home):
    family, spec = _minilm()
    remote = LaunchPolicy(from_network=True, allow_remote_code=True)
    remote.check_plan({"trust_remote_code": True}, family, spec, builtin=True,
                      reads_remote_code=True)
    _refused(remote, {"envs": {"A": "1"}})
    envs = LaunchPolicy(from_network=True, allow_launch_envs=True)
    envs.check_request({"envs": {"A": "1"}})
    with pytest.raises(Forbidden):
        envs.check_plan({"trust_remote_code": True}, family, spec, builtin=True,
                        reads_remote_code=True)
    _refused(envs, {"model_path": "/"})
    LaunchPolicy(from_network=True, allow_any_model_path=True).check_request({"model_path": "/"})


def test_a_registered_model_uri_outside_the_roots_is_refused(home, tmp_path):
    family = parse_family("embedding", {
        "model_name": "custom-emb", "dimensions": 8,
        "model_specs": [{"model_format": "pytorch", "model_uri": "/etc"}]})
    spec = family.model_specs[0]
    with pytest.raises(Forbidden, match="model_uri of custom-emb"):
        EXPOSED.check_plan({}, family, spec, builtin=False, reads_remote_code=True)
    # The launch's own model_path replaces the model_uri: that one was checked instead.
    EXPOSED.check_plan({"model_path": str(home / "cache")}, family, spec, builtin=False,
                       reads_remote_code=True)


def test_remote_code_asked_by_a_custom_registration_counts_as_asked(home):
    family = parse_family("embedding", {
        "model_name": "custom-code", "dimensions": 8, "trust_remote_code": True,
        "model_specs": [{"model_format": "pytorch", "model_id": "someone/model"}]})
    spec = family.model_specs[0]
    with pytest.raises(Forbidden, match="registration of custom-code.*--allow-remote-code"):
        EXPOSED.check_plan({}, family, spec, builtin=False, reads_remote_code=True)
    # The launch may say no; an engine that runs no Python from the folder is not concerned;
    # a built-in family's setting is the installed catalogue's.
    EXPOSED.check_plan({"trust_remote_code": False}, family, spec, builtin=False,
                       reads_remote_code=True)
    EXPOSED.check_plan({}, family, spec, builtin=False, reads_remote_code=False)
    EXPOSED.check_plan({}, family, spec, builtin=True, reads_remote_code=True)


def test_plan_launch_refuses_before_reading_the_disk_and_checks_options(home):
    catalogue = Catalogue()
    request = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_path": "/"}
    with pytest.raises(Forbidden):
        plan_launch(catalogue, [], [], request, EXPOSED)
    with pytest.raises(BadRequest, match="unknown launch option 'n_ctx'"):
        plan_launch(catalogue, [], [], {**request, "n_ctx": 512})
    plan = plan_launch(catalogue, [], [], {**request, "trust_remote_code": "true"})
    assert plan.request["trust_remote_code"] is True  # coerced once, for every later reader


def test_checked_request_types_the_options_and_leaves_xinference_defaults_alone():
    engine = engine_by_name("llama.cpp")
    body = {"model_name": "smollm2-instruct", "replica": 1, "n_worker": 1,
            "enable_virtual_env": False, "peft_model_config": None, "n_parallel": "4",
            "skip_memory_check": True, "model_path": "/m.gguf"}
    checked = checked_request(body, engine, "LLM")
    # Xinference's always-sent fields are launch fields, not unknown engine options.
    assert checked == {**body, "n_parallel": 4}


# ---- spec fields that become paths --------------------------------------------------------------


def _spec(**fields) -> ModelSpec:
    return ModelSpec.model_validate({"model_format": "gguf", "model_size_in_billions": 1,
                                     "quantizations": ["Q4_K_M"], "model_id": "a/b", **fields})


@pytest.mark.parametrize("fields", [
    {"model_size_in_billions": "../../../../tmp/x"},
    {"model_size_in_billions": "/tmp/x"},
    {"model_size_in_billions": ".."},
    {"model_size_in_billions": "1\x00"},
    {"model_size_in_billions": -1},
    {"model_size_in_billions": float("inf")},
    {"model_format": "../../x"},
    {"model_format": "gguf/../../x"},
    {"quantizations": ["../../etc"]},
    {"quantizations": ["Q4_K_M", ".hidden"]},
    {"quantizations": ["a\\b"]},
    {"model_file_name_template": "../../{quantization}.gguf"},
    {"model_file_name_template": "/etc/{quantization}"},
    {"model_file_name_template": "{quantization.__class__.__mro__}.gguf"},
    {"model_file_name_template": "{quantization:>999999999}.gguf"},
    {"model_file_name_template": "{quantization!r}.gguf"},
    {"model_file_name_template": "{other}.gguf"},
    {"model_file_name_split_template": "{quantization}/../{part}.gguf",
     "quantization_parts": {"Q4_K_M": ["00001-of-00002"]}},
    {"model_file_name_split_template": "m-{quantization}-{part}.gguf",
     "quantization_parts": {"Q4_K_M": ["../../x"]}},
])
def test_spec_fields_that_would_leave_the_cache_are_refused(fields):
    with pytest.raises(ValidationError):
        _spec(**fields)


def test_a_registration_with_a_traversing_size_is_a_400():
    family = {"model_name": "evil", "model_ability": ["generate"], "model_specs": [{
        "model_format": "pytorch", "model_size_in_billions": "../../../../tmp/x",
        "quantizations": ["none"], "model_id": "a/b"}]}
    with pytest.raises(BadRequest, match="model_size_in_billions"):
        parse_family("LLM", family)


@pytest.mark.parametrize("fields", [
    {"model_size_in_billions": "0_5"}, {"model_size_in_billions": 1.5},
    {"model_size_in_billions": "46_7"}, {"model_size_in_billions": 7},
    {"model_format": "ggufv2"}, {"quantizations": ["Q4_K_M", "q8_0", "4-bit", "none"]},
    {"model_file_name_template": "qwen2.5-7b-instruct-{quantization}.gguf"},
    {"model_file_name_template": "{quantization}/model-{quantization}.gguf"},
    {"model_file_name_split_template": "{quantization}/m-{quantization}-{part}.gguf",
     "quantization_parts": {"Q4_K_M": ["00001-of-00002", "00002-of-00002"]}},
])
def test_real_spec_fields_pass(fields):
    _spec(**fields)


def test_every_built_in_spec_passes_the_checks():
    specs = [s for t in ("LLM", "embedding", "rerank") for f in builtin_families(t).values()
             for s in f.model_specs]
    assert len(specs) > 100
    for spec in specs:
        ModelSpec.model_validate(spec.model_dump())


def test_joined_paths_stay_under_their_root(tmp_path):
    assert inside(tmp_path, "a", "b.gguf") == tmp_path / "a" / "b.gguf"
    for parts in (("..", "x"), ("/etc",), ("a/../../x",), ("",), (".",)):
        with pytest.raises(BadRequest, match="leads outside"):
            inside(tmp_path, *parts)
    assert within(tmp_path / "a" / ".." / "b", [tmp_path])
    assert not within(tmp_path / ".." / "x", [tmp_path])


def test_the_cache_folder_is_checked_even_for_a_spec_that_skipped_validation(home):
    family = builtin_families("embedding")["all-MiniLM-L6-v2"]
    unchecked = ModelSpec.model_construct(model_format="pytorch",
                                          model_size_in_billions="../../../../tmp/x",
                                          quantizations=["none"])
    with pytest.raises(BadRequest, match="leads outside"):
        download.cache_folder(family, unchecked, "none")
    gguf = ModelSpec.model_construct(model_format="gguf", model_size_in_billions=None,
                                     quantizations=["q"], model_file_name_template="../{quantization}")
    with pytest.raises(BadRequest, match="leads outside"):
        download.gguf_file(home, gguf, "q")


# ---- the estimate's bounded scan ----------------------------------------------------------------


def test_weights_are_found_in_the_folder_or_one_level_below_never_deeper(tmp_path):
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "model.safetensors").write_bytes(b"x")
    assert weights_info._weight_files(tmp_path / "top")[1] == [tmp_path / "top" / "model.safetensors"]
    (tmp_path / "nested" / "0_Transformer").mkdir(parents=True)
    (tmp_path / "nested" / "0_Transformer" / "pytorch_model.bin").write_bytes(b"x")
    assert weights_info._weight_files(tmp_path / "nested")[0] == "bin"
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    (tmp_path / "deep" / "a" / "b" / "model.safetensors").write_bytes(b"x")
    assert weights_info._weight_files(tmp_path / "deep") == ("", [])


def test_a_huge_folder_is_not_walked(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_info, "_MAX_ENTRIES", 50)
    for index in range(200):
        (tmp_path / f"file-{index:03d}.txt").write_bytes(b"")
    (tmp_path / "zzz").mkdir()
    (tmp_path / "zzz" / "model.safetensors").write_bytes(b"x")
    started = time.monotonic()
    assert weights_info._weight_files(tmp_path) == ("", [])  # the budget ran out first
    assert time.monotonic() - started < 1.0


def test_the_estimate_of_the_root_folder_answers_quickly():
    started = time.monotonic()
    weights_info._weight_files(Path("/"))
    assert time.monotonic() - started < 1.0


def test_xinference_cli_defaults_pass_where_they_ask_for_nothing():
    """Xinference's CLI sends enable_thinking=false with every launch: an embedding engine lets
    that pass unread; set to true it is an option the engine does not take."""
    engine = engine_by_name("sentence_transformers")
    body = {"model_name": "all-MiniLM-L6-v2", "enable_thinking": False, "trust_remote_code": True}
    assert "enable_thinking" not in checked_request(body, engine, "embedding")
    with pytest.raises(BadRequest, match="unknown launch option 'enable_thinking'"):
        checked_request({**body, "enable_thinking": True}, engine, "embedding")
    llama = engine_by_name("llama.cpp")
    assert checked_request(body, llama, "LLM")["enable_thinking"] is False  # the LLM reads it
