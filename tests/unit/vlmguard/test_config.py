"""Unit tests for vlmguard.config: field docs and defaults, layering, validation, env vars."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from vlmguard import config as cfgmod
from vlmguard.config import (
    ENV_VARS,
    CategoryConfig,
    LimitsConfig,
    PolicyConfig,
    TaxonomyConfig,
    TenantPolicyConfig,
    VLMGuardConfig,
    env_overrides,
    load_config,
    set_dotted,
)
from vlmguard.errors import ConfigError, Reason

# --------------------------------------------------------------------------------------------
# Walking the config tree
# --------------------------------------------------------------------------------------------

#: Fields that name an item of a list and so cannot have a meaningful default. A category
#: without an id, description or guidance is not a category; the list itself has a default.
_REQUIRED_BY_DESIGN = {
    ("CategoryConfig", "id"),
    ("CategoryConfig", "description"),
    ("CategoryConfig", "guidance"),
}


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """BaseModel classes inside an annotation (also inside dict/tuple/list/Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        if arg is Ellipsis:
            continue
        yield from _models_in(arg)


def _all_models(root: type[BaseModel] = VLMGuardConfig) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return seen


ALL_MODELS = _all_models()
ALL_FIELDS = [(m, name) for m in ALL_MODELS for name in m.model_fields]


def test_walk_reaches_every_config_model_defined_in_the_module() -> None:
    defined = {
        obj
        for name, obj in vars(cfgmod).items()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and name.endswith("Config")
    }
    reached = set(ALL_MODELS)
    assert defined <= reached, f"not reachable from VLMGuardConfig: {defined - reached}"
    # the walk also goes through containers (dict/tuple) to their element models
    assert {TenantPolicyConfig, CategoryConfig, cfgmod.CategoryThreshold} <= reached


@pytest.mark.parametrize(
    ("model", "field_name"), ALL_FIELDS, ids=[f"{m.__name__}.{f}" for m, f in ALL_FIELDS]
)
def test_every_config_field_has_a_description(model: type[BaseModel], field_name: str) -> None:
    desc = model.model_fields[field_name].description
    assert desc and desc.strip(), f"{model.__name__}.{field_name} has no description"


DEFAULTED_FIELDS = [(m, f) for m, f in ALL_FIELDS if (m.__name__, f) not in _REQUIRED_BY_DESIGN]


@pytest.mark.parametrize(
    ("model", "field_name"),
    DEFAULTED_FIELDS,
    ids=[f"{m.__name__}.{f}" for m, f in DEFAULTED_FIELDS],
)
def test_every_config_field_has_a_default(model: type[BaseModel], field_name: str) -> None:
    field = model.model_fields[field_name]
    has_default = field.default is not PydanticUndefined or field.default_factory is not None
    assert has_default, f"{model.__name__}.{field_name} has no default"
    assert not field.is_required()


def test_only_list_element_fields_are_required_and_their_list_has_a_default() -> None:
    required = {(m.__name__, f) for m, f in ALL_FIELDS if m.model_fields[f].is_required()}
    assert required == _REQUIRED_BY_DESIGN
    assert TaxonomyConfig.model_fields["categories"].default_factory is not None


@pytest.mark.parametrize("model", ALL_MODELS, ids=[m.__name__ for m in ALL_MODELS])
def test_every_config_model_is_frozen_and_forbids_unknown_keys(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    assert model.__name__.endswith("Config") or model.__name__ == "CategoryThreshold"


@pytest.mark.parametrize("model", ALL_MODELS, ids=[m.__name__ for m in ALL_MODELS])
def test_every_config_model_has_a_docstring(model: type[BaseModel]) -> None:
    assert model.__doc__ and model.__doc__.strip()


def test_default_config_builds_from_defaults_alone() -> None:
    cfg = VLMGuardConfig()
    assert cfg.server.listen == "127.0.0.1:50051"
    assert cfg.queue.url == ""
    assert "default" in cfg.policy.tenants
    assert cfg.analyzer.batching.max_batch_size == 16


def test_config_instances_are_immutable() -> None:
    cfg = VLMGuardConfig()
    with pytest.raises(ValidationError):
        cfg.server.listen = "0.0.0.0:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.server = cfg.server  # type: ignore[misc]


def test_limits_max_message_bytes_covers_all_images_and_text() -> None:
    lim = LimitsConfig(max_images=2, max_image_bytes=1000, max_text_chars=10,
                       max_conversation_images=3, max_conversation_chars=50,
                       max_output_chars=20)
    # A conversation's images and text, and an answer for the output check.
    assert lim.max_message_bytes == 3 * 1000 + (50 + 20) * 4 + 64 * 1024
    assert lim.max_message_bytes > lim.max_images * lim.max_image_bytes


# --------------------------------------------------------------------------------------------
# Layering
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, data: Any, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_load_config_with_nothing_gives_defaults() -> None:
    assert load_config(None, environ={}) == VLMGuardConfig()


def test_yaml_file_overrides_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, {"server": {"listen": "0.0.0.0:7000"}, "limits": {"max_images": 2}})
    cfg = load_config(p, environ={})
    assert cfg.server.listen == "0.0.0.0:7000"
    assert cfg.limits.max_images == 2
    assert cfg.limits.max_text_chars == LimitsConfig().max_text_chars  # untouched default


def test_env_overrides_yaml_file(tmp_path: Path) -> None:
    p = _write(tmp_path, {"server": {"listen": "0.0.0.0:7000", "grace_s": 1.0}})
    cfg = load_config(p, environ={"VLMGUARD_SERVER__LISTEN": "0.0.0.0:8000"})
    assert cfg.server.listen == "0.0.0.0:8000"
    assert cfg.server.grace_s == 1.0  # the rest of the file's section survives


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    p = _write(tmp_path, {"server": {"listen": "0.0.0.0:7000"}})
    cfg = load_config(
        p,
        environ={"VLMGUARD_SERVER__LISTEN": "0.0.0.0:8000"},
        overrides={"server": {"listen": "0.0.0.0:9000"}},
    )
    assert cfg.server.listen == "0.0.0.0:9000"


def test_layers_deep_merge_nested_sections(tmp_path: Path) -> None:
    p = _write(tmp_path, {"policy": {"tenants": {"default": {"rewrite_threshold": 0.4}}}})
    cfg = load_config(
        p,
        environ={"VLMGUARD_POLICY__TENANTS__DEFAULT__BLOCK_THRESHOLD": "0.9"},
        overrides=set_dotted({}, "server.tls.client_ca_file", "ca.pem"),
    )
    default = cfg.policy.tenants["default"]
    assert default.rewrite_threshold == 0.4
    assert default.block_threshold == 0.9
    assert cfg.server.tls.client_ca_file == "ca.pem"
    assert cfg.server.tls.enabled is False


def test_config_path_comes_from_vlmguard_config_env_when_not_given(tmp_path: Path) -> None:
    p = _write(tmp_path, {"metrics": {"enabled": False}})
    cfg = load_config(None, environ={"VLMGUARD_CONFIG": str(p)})
    assert cfg.metrics.enabled is False


def test_explicit_path_beats_vlmguard_config_env(tmp_path: Path) -> None:
    a = _write(tmp_path, {"metrics": {"listen": "127.0.0.1:1"}}, "a.yaml")
    b = _write(tmp_path, {"metrics": {"listen": "127.0.0.1:2"}}, "b.yaml")
    cfg = load_config(a, environ={"VLMGUARD_CONFIG": str(b)})
    assert cfg.metrics.listen == "127.0.0.1:1"


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, ""), environ={}) == VLMGuardConfig()


def test_shipped_embedded_config_loads() -> None:
    path = Path(__file__).resolve().parents[3] / "configs" / "embedded.yaml"
    cfg = load_config(path, environ={})
    assert cfg.target.backend == "smollm2"


def test_vlmguard_queue_url_env_sets_queue_url() -> None:
    cfg = load_config(None, environ={"VLMGUARD_QUEUE_URL": "redis://localhost:6379/0"})
    assert cfg.queue.url == "redis://localhost:6379/0"


def test_queue_url_env_value_is_taken_verbatim_not_parsed_as_yaml() -> None:
    assert env_overrides({"VLMGUARD_QUEUE_URL": "null"}) == {"queue": {"url": "null"}}


def test_env_values_are_parsed_as_yaml_ints_floats_and_bools() -> None:
    cfg = load_config(
        None,
        environ={
            "VLMGUARD_LIMITS__MAX_IMAGES": "7",
            "VLMGUARD_SERVER__GRACE_S": "2.5",
            "VLMGUARD_SERVER__REFLECTION": "false",
            "VLMGUARD_METRICS__ENABLED": "no",
            "VLMGUARD_SERVER__TLS__ENABLED": "false",
            "VLMGUARD_ANALYZER__BATCHING__MAX_BATCH_SIZE": "3",
        },
    )
    assert cfg.limits.max_images == 7
    assert cfg.server.grace_s == 2.5
    assert cfg.server.reflection is False
    assert cfg.metrics.enabled is False
    assert cfg.analyzer.batching.max_batch_size == 3


def test_env_override_structure_is_nested_and_lowercased() -> None:
    assert env_overrides({"VLMGUARD_SERVER__TLS__ENABLED": "true"}) == {
        "server": {"tls": {"enabled": True}}
    }


def test_env_value_that_is_not_valid_yaml_is_kept_as_a_string() -> None:
    cfg = load_config(None, environ={"VLMGUARD_SERVER__LISTEN": "[::]:50051"})
    assert cfg.server.listen == "[::]:50051"


def test_env_host_port_values_stay_strings() -> None:
    cfg = load_config(None, environ={"VLMGUARD_METRICS__LISTEN": "0.0.0.0:9464"})
    assert cfg.metrics.listen == "0.0.0.0:9464"


def test_env_vars_without_section_separator_or_prefix_are_ignored() -> None:
    environ = {
        "VLMGUARD_FOO": "1",
        "VLMGUARD_CLIENT_API_KEY": "secret",
        "OTHER_SERVER__LISTEN": "x",
        "PATH": "/usr/bin",
        "VLMGUARD_API_KEYS": "a,b",
        "VLMGUARD_CACHE_DIR": "/tmp/x",
        "VLMGUARD_CONFIG": "",
    }
    assert env_overrides(environ) == {}


def test_set_dotted_merges_into_existing_overrides() -> None:
    ov = set_dotted({"server": {"grace_s": 1}}, "server.listen", "a:1")
    ov = set_dotted(ov, "metrics.enabled", False)
    assert ov == {"server": {"grace_s": 1, "listen": "a:1"}, "metrics": {"enabled": False}}


# --------------------------------------------------------------------------------------------
# Kubernetes-injected variables
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["VLMGUARD_PORT", "VLMGUARD_SERVICE_HOST"])
def test_kubernetes_injected_names_are_not_declared_env_vars(name: str) -> None:
    assert name not in ENV_VARS
    assert not any(k.startswith(name) for k in ENV_VARS)


def test_kubernetes_service_env_vars_are_ignored_by_env_overrides() -> None:
    k8s = {
        "VLMGUARD_PORT": "tcp://10.0.0.1:50051",
        "VLMGUARD_SERVICE_HOST": "10.0.0.1",
        "VLMGUARD_SERVICE_PORT": "50051",
        "VLMGUARD_SERVICE_PORT_GRPC": "50051",
        "VLMGUARD_PORT_50051_TCP": "tcp://10.0.0.1:50051",
        "VLMGUARD_PORT_50051_TCP_ADDR": "10.0.0.1",
        "VLMGUARD_PORT_50051_TCP_PORT": "50051",
        "VLMGUARD_PORT_50051_TCP_PROTO": "tcp",
    }
    assert env_overrides(k8s) == {}
    assert load_config(None, environ=k8s) == VLMGuardConfig()


def test_every_declared_env_var_has_an_explanation() -> None:
    for name, doc in ENV_VARS.items():
        assert name.startswith("VLMGUARD_")
        assert doc.strip()


def test_no_module_reads_the_kubernetes_injected_names() -> None:
    pkg = Path(cfgmod.__file__).resolve().parent
    offenders = []
    for src in pkg.rglob("*.py"):
        if src.parent.name == "v1":
            continue
        text = src.read_text()
        for name in ("VLMGUARD_PORT", "VLMGUARD_SERVICE_HOST"):
            for needle in (f'environ.get("{name}"', f'environ["{name}"]', f'getenv("{name}"'):
                if needle in text:
                    offenders.append(f"{src.name}: {needle}")
    assert offenders == []


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_missing_config_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.yaml", environ={})
    assert ei.value.reason == Reason.CONFIG_INVALID
    assert "nope.yaml" in ei.value.message


def test_missing_file_named_by_vlmguard_config_env_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(None, environ={"VLMGUARD_CONFIG": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping_is_config_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_write(tmp_path, content), environ={})
    assert "mapping" in ei.value.message
    assert ei.value.reason == Reason.CONFIG_INVALID


def test_invalid_yaml_syntax_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_write(tmp_path, "server: [unclosed\n"), environ={})
    assert "YAML" in ei.value.message


def test_directory_as_config_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path, environ={})


def test_binary_config_file_is_config_error(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError):
        load_config(p, environ={})


def test_invalid_env_value_names_dotted_key_and_bad_value() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_LIMITS__MAX_IMAGES": "lots"})
    msg = ei.value.message
    assert "limits.max_images" in msg
    assert "lots" in msg
    assert ei.value.reason == Reason.CONFIG_INVALID


def test_out_of_range_value_names_dotted_key_and_bad_value(tmp_path: Path) -> None:
    p = _write(tmp_path, {"server": {"grace_s": -3}})
    with pytest.raises(ConfigError) as ei:
        load_config(p, environ={})
    assert "server.grace_s" in ei.value.message
    assert "-3" in ei.value.message


def test_nested_invalid_value_names_full_dotted_path() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_ANALYZER__BATCHING__MAX_BATCH_SIZE": "0"})
    assert "analyzer.batching.max_batch_size" in ei.value.message
    assert "0" in ei.value.message


def test_invalid_literal_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides={"logging": {"level": "LOUD"}})
    assert "logging.level" in ei.value.message
    assert "LOUD" in ei.value.message


def test_unknown_key_is_rejected_with_its_dotted_path() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_SERVER__LISTN": "0.0.0.0:1"})
    assert "server.listn" in ei.value.message


def test_every_invalid_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(
            None,
            environ={"VLMGUARD_LIMITS__MAX_IMAGES": "-1", "VLMGUARD_SERVER__GRACE_S": "slow"},
        )
    assert "limits.max_images" in ei.value.message
    assert "server.grace_s" in ei.value.message


def test_tls_enabled_without_files_is_config_error() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_SERVER__TLS__ENABLED": "true"})
    assert "server.tls" in ei.value.message
    assert "cert_file" in ei.value.message


# --------------------------------------------------------------------------------------------
# Policy validation
# --------------------------------------------------------------------------------------------


def test_block_threshold_below_rewrite_threshold_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TenantPolicyConfig(rewrite_threshold=0.8, block_threshold=0.5)
    with pytest.raises(ConfigError) as ei:
        load_config(
            None,
            overrides={
                "policy": {
                    "tenants": {
                        "default": {
                            "rewrite_threshold": 0.8,
                            "block_threshold": 0.5,
                        }
                    }
                }
            },
        )
    assert "policy.tenants.default" in ei.value.message
    assert "block_threshold" in ei.value.message


def test_equal_block_and_rewrite_thresholds_are_allowed() -> None:
    assert TenantPolicyConfig(rewrite_threshold=0.6, block_threshold=0.6).block_threshold == 0.6


def test_policy_without_default_tenant_is_rejected() -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(tenants={"acme": TenantPolicyConfig()})
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides={"policy": {"tenants": {"acme": {}}}})
    assert "policy.tenants" in ei.value.message
    assert "default" in ei.value.message


def test_yaml_defines_extra_tenants_with_category_overrides(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        {
            "policy": {
                "tenants": {
                    "default": {},
                    "acme": {
                        "rewrite_threshold": 0.3,
                        "block_threshold": 0.8,
                        "categories": {"self_harm": {"rewrite": 0.1}},
                    },
                }
            }
        },
    )
    cfg = load_config(p, environ={})
    assert set(cfg.policy.tenants) == {"default", "acme"}
    assert cfg.policy.tenants["acme"].categories["self_harm"].rewrite == 0.1
    assert cfg.policy.tenants["acme"].categories["self_harm"].block is None


def test_unknown_category_in_tenant_override_is_rejected() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(
            None,
            overrides={
                "policy": {
                    "tenants": {
                        "default": {
                            "categories": {"not_a_category": {"rewrite": 0.2}},
                        }
                    }
                }
            },
        )
    assert "not_a_category" in ei.value.message
    assert "policy.tenants.default.categories" in ei.value.message


def test_category_override_threshold_out_of_range_is_rejected() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(
            None,
            overrides={
                "policy": {
                    "tenants": {
                        "default": {
                            "categories": {"privacy": {"block": 1.5}},
                        }
                    }
                }
            },
        )
    assert "policy.tenants.default.categories.privacy.block" in ei.value.message
    assert "1.5" in ei.value.message


def test_unknown_tenant_mode_must_be_reject_or_default() -> None:
    assert PolicyConfig().unknown_tenant == "reject"
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_POLICY__UNKNOWN_TENANT": "allow"})
    assert "policy.unknown_tenant" in ei.value.message


# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------

EXPECTED_CATEGORIES = [
    "violence_weapons",
    "illegal_activity",
    "self_harm",
    "dangerous_behavior",
    "sexual_content",
    "child_safety",
    "hate_discrimination",
    "privacy",
    "fraud_deception",
    "cyber_malware",
    "specialized_advice",
    "controversial_topics",
]


def test_default_taxonomy_has_twelve_unique_categories_in_order() -> None:
    tax = TaxonomyConfig()
    assert len(tax.categories) == 12
    assert len(set(tax.ids)) == 12
    assert tax.ids == EXPECTED_CATEGORIES


def test_every_default_category_has_description_and_guidance() -> None:
    for c in TaxonomyConfig().categories:
        assert c.description.strip(), c.id
        assert c.guidance.strip(), c.id
        assert c.handling in ("rewrite", "care", "block")


def test_default_category_handling() -> None:
    tax = TaxonomyConfig()
    handling = {c.id: c.handling for c in tax.categories}
    assert handling["child_safety"] == "block"
    assert handling["specialized_advice"] == "care"
    assert handling["controversial_topics"] == "care"
    assert [c for c, h in handling.items() if h != "rewrite"] == [
        "child_safety",
        "specialized_advice",
        "controversial_topics",
    ]


def test_taxonomy_get_finds_categories_by_id() -> None:
    tax = TaxonomyConfig()
    spec = tax.get("privacy")
    assert spec is not None and spec.id == "privacy"
    assert tax.get("nope") is None


def test_taxonomy_rejects_duplicate_ids() -> None:
    c = CategoryConfig(id="a", description="d", guidance="g")
    with pytest.raises(ValidationError):
        TaxonomyConfig(categories=(c, c))


def test_taxonomy_rejects_empty_category_list() -> None:
    with pytest.raises(ValidationError):
        TaxonomyConfig(categories=())


@pytest.mark.parametrize("bad_id", ["Upper", "1abc", "has-dash", "", "sp ace"])
def test_category_id_must_be_lower_snake(bad_id: str) -> None:
    with pytest.raises(ValidationError):
        CategoryConfig(id=bad_id, description="d", guidance="g")


def test_custom_taxonomy_in_yaml_replaces_defaults_and_policy_checks_against_it(
    tmp_path: Path,
) -> None:
    data: dict[str, Any] = {
        "taxonomy": {
            "categories": [
                {"id": "spam", "description": "unsolicited ads", "guidance": "do not write spam"},
            ]
        },
        "policy": {"tenants": {"default": {"categories": {"spam": {"rewrite": 0.2}}}}},
    }
    cfg = load_config(_write(tmp_path, data), environ={})
    assert cfg.taxonomy.ids == ["spam"]
    data["policy"]["tenants"]["default"]["categories"] = {"privacy": {"rewrite": 0.2}}
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path, data, "b.yaml"), environ={})


def test_a_front_door_without_its_upstream_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"target\.openai\.base_url"):
        VLMGuardConfig.model_validate({"http": {"listen": "127.0.0.1:8080"}})
    ok = VLMGuardConfig.model_validate({"http": {"listen": "127.0.0.1:8080"},
                                        "target": {"openai": {"base_url": "http://vllm:8000/v1"}}})
    assert ok.http.listen == "127.0.0.1:8080"
