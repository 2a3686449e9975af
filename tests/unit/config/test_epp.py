"""EndpointPickerConfig parsing: valid configs, defaults, and one test per kind of invalid input."""

from __future__ import annotations

import pytest

from lanterna.errors import ConfigError
from lanterna.scheduler import default_epp_config, lanterna_recommended_config, load_epp_config

VALID = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- name: prefix
  type: prefix-cache-scorer
  parameters: {blockSizeTokens: 64, maxPrefixBlocksToMatch: 128, lruCapacityPerServer: 1000}
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: prefix
    weight: 3
  - pluginRef: max-score-picker
"""


def test_valid_config_defaults_name_and_weight():
    cfg = load_epp_config(VALID)
    assert [p.instance_name for p in cfg.plugins] == ["queue-scorer", "prefix", "max-score-picker"]
    refs = cfg.schedulingProfiles[0].plugins
    assert [r.effective_weight for r in refs] == [1.0, 3.0, 1.0]


def test_load_from_file_and_shorthands(tmp_path):
    f = tmp_path / "epp.yaml"
    f.write_text(VALID)
    assert load_epp_config(str(f)) == load_epp_config(f) == load_epp_config(VALID)
    assert load_epp_config("default") == default_epp_config()
    assert load_epp_config("lanterna") == lanterna_recommended_config()


def test_default_config_is_llm_d_default():
    refs = {r.pluginRef: r.effective_weight for r in default_epp_config().schedulingProfiles[0].plugins}
    assert refs == {"queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3,
                    "max-score-picker": 1}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace("- type: queue-scorer", "- name: queue-scorer\n  type: queue-scorrer"), "unknown plugin type 'queue-scorrer'; known types: .*queue-scorer"),
        (lambda s: s.replace("pluginRef: prefix\n", "pluginRef: prefixx\n"), "unknown plugin 'prefixx'.*defined plugins"),
        (lambda s: s.replace("weight: 3", "weight: -1"), "weight must be a finite number >= 0"),
        (lambda s: s.replace("weight: 3", "weight: lots"), "weight"),
        (lambda s: s.replace("blockSizeTokens: 64", "blockSizeToken: 64"), "plugin 'prefix'.*blockSizeToken"),
        (lambda s: s.replace("blockSizeTokens: 64", "blockSizeTokens: 0"), "blockSizeTokens"),
        (lambda s: s.replace("kind: EndpointPickerConfig", "kind: Foo"), "kind"),
        (lambda s: s.replace("apiVersion: llm-d.ai/v1alpha1", "apiVersion: v9"), "apiVersion"),
        (lambda s: s + "bogus: 1\n", "bogus"),
        (lambda s: s.replace("- name: prefix\n", "- name: queue-scorer\n").replace("pluginRef: prefix\n", "pluginRef: queue-scorer\n"), "duplicate plugin name"),
        (lambda s: "plugins: [", "not valid YAML"),
        (lambda s: "", "empty"),
        (lambda s: "- a\n- b\n", "expected a mapping"),
    ],
    ids=["unknown-type", "dangling-ref", "negative-weight", "non-numeric-weight", "unknown-param", "bad-param",
         "wrong-kind", "wrong-api-version", "unknown-top-level-key", "duplicate-name", "bad-yaml", "empty",
         "not-a-mapping"],
)
def test_invalid_configs_raise_clear_config_error(mutate, message):
    with pytest.raises(ConfigError, match=message):
        load_epp_config(mutate(VALID))


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read file"):
        load_epp_config("/nonexistent/epp.yaml")


def test_two_profiles_need_a_handler():
    two = VALID + "- name: other\n  plugins: [{pluginRef: queue-scorer}]\n"
    with pytest.raises(ConfigError, match="profile handler"):
        load_epp_config(two)


def test_llm_d_pd_config_with_legacy_names_parses():
    text = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefill-header-handler
""".replace("- type: prefill-header-handler\n", "") + """- type: pd-profile-handler
  parameters: {threshold: 10, hashBlockSize: 64}
- type: prefill-filter
- type: decode-filter
- type: prefix-cache-scorer
  parameters: {hashBlockSize: 64, maxPrefixBlocksToMatch: 256, lruCapacityPerServer: 31250}
- type: max-score-picker
schedulingProfiles:
- name: prefill
  plugins: [{pluginRef: prefill-filter}, {pluginRef: max-score-picker}, {pluginRef: prefix-cache-scorer, weight: 50}]
- name: decode
  plugins: [{pluginRef: decode-filter}, {pluginRef: max-score-picker}, {pluginRef: prefix-cache-scorer, weight: 50}]
"""
    cfg = load_epp_config(text)
    assert len(cfg.schedulingProfiles) == 2
