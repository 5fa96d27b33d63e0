from pathlib import Path

import pytest

from tradetree.config import load_engine_config
from tradetree.core.config import VenueConfig, load_strategy_config
from tradetree.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_paper_config_loads():
    cfg = load_engine_config(REPO / "configs" / "paper.yaml")
    assert cfg.venues[0].uses_embedded_simulator
    assert {s.id for s in cfg.strategies} == {"MeanReversion_v10_BTC", "MeanReversion_v3_ETH"}


def test_every_shipped_strategy_config_loads():
    for path in (REPO / "configs" / "strategies").glob("*.yaml"):
        assert load_strategy_config(path).id


@pytest.mark.parametrize(
    "text,needle",
    [
        ("venues: [{name: okx, rest_url: 'http://x'}]", "venues.0"),
        ("venues: [{name: okx, colour: red}]", "venues.0.colour"),
        ("venues: []", "venues"),
        ("venues: [{name: okx}]\nredis: {namespace: 'bad space'}", "redis.namespace"),
        ("venues: [{name: okx}]\nstrategies: [{class: MeanReversion, version: v1, venue: nope, symbols: [X]}]",
         "strategies.0.venue"),
        ("venues: [{name: okx}]\nsimulator: {tick_interval_ms: -5}", "simulator.tick_interval_ms"),
        ("venues: [{name: okx}\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_engine_config_names_file_and_field(tmp_path, text, needle):
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_engine_config(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_bad_strategy_file_names_that_file(tmp_path):
    (tmp_path / "s.yaml").write_text("class: MeanReversion\nversion: ten\nvenue: okx\nsymbols: [X]\n")
    (tmp_path / "engine.yaml").write_text("venues: [{name: okx}]\nstrategy_files: [s.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load_engine_config(tmp_path / "engine.yaml")
    assert "s.yaml" in str(err.value) and "version" in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_engine_config(tmp_path / "nope.yaml")


def test_credentials_come_from_env_and_stay_secret():
    v = VenueConfig(name="okx")
    creds = v.resolve_credentials({"OKX_API_KEY": "k", "OKX_SECRET_KEY": "sssecret", "OKX_PASSPHRASE": "p"})
    assert creds.secret_key.get_secret_value() == "sssecret"
    assert "sssecret" not in repr(creds) and "sssecret" not in str(creds.model_dump())


def test_missing_credentials_name_the_variables():
    with pytest.raises(ConfigError, match="OKX_SECRET_KEY"):
        VenueConfig(name="okx").resolve_credentials({"OKX_API_KEY": "k", "OKX_PASSPHRASE": "p"})


def test_credentials_from_secrets_file(tmp_path):
    f = tmp_path / "okx.yaml"
    f.write_text("api_key: k\nsecret_key: s\npassphrase: p\n")
    assert VenueConfig(name="okx", secrets_file=f).resolve_credentials({}).api_key.get_secret_value() == "k"
    f.write_text("api_key: k\n")
    with pytest.raises(ConfigError, match="secret_key"):
        VenueConfig(name="okx", secrets_file=f).resolve_credentials({})
