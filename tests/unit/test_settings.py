"""Settings: the contract's environment variables, their defaults and what is refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from services.settings import DEV_MANAGERS, Settings, SettingsError, load_settings

EXPLICIT_TOKENS = {"RESERVES_API_TOKENS": "ivanov=t-ivanov", "RESERVES_ERP_TOKENS": "t-erp"}


def env_for(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"RESERVES_VAR_DIR": str(tmp_path), **values}


def load(tmp_path: Path, **values: str) -> Settings:
    return load_settings(env_for(tmp_path, **values))


# -- defaults -----------------------------------------------------------------------------------

def test_http_listens_on_localhost_port_8000_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, **EXPLICIT_TOKENS)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)


def test_http_host_and_port_are_taken_from_the_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, HTTP_HOST="0.0.0.0", HTTP_PORT="9123", **EXPLICIT_TOKENS)
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 9123)


def test_request_ttl_is_one_day_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, **EXPLICIT_TOKENS).request_ttl == 86400


def test_request_ttl_is_taken_from_the_environment(tmp_path: Path) -> None:
    assert load(tmp_path, RESERVE_REQUEST_TTL="2.5", **EXPLICIT_TOKENS).request_ttl == 2.5


def test_postgres_and_kafka_are_embedded_when_unset(tmp_path: Path) -> None:
    settings = load(tmp_path, **EXPLICIT_TOKENS)
    assert settings.database_url is None and settings.kafka_bootstrap_servers is None
    assert settings.embedded_postgres and settings.embedded_kafka


def test_postgres_and_kafka_are_embedded_when_set_empty(tmp_path: Path) -> None:
    settings = load(tmp_path, DATABASE_URL="", KAFKA_BOOTSTRAP_SERVERS="", **EXPLICIT_TOKENS)
    assert settings.database_url is None and settings.kafka_bootstrap_servers is None
    assert settings.embedded_postgres and settings.embedded_kafka


def test_named_postgres_and_kafka_are_used_instead_of_embedded_ones(tmp_path: Path) -> None:
    settings = load(tmp_path, DATABASE_URL="postgresql://db/x",
                    KAFKA_BOOTSTRAP_SERVERS="k1:9092,k2:9092", **EXPLICIT_TOKENS)
    assert settings.database_url == "postgresql://db/x"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert not settings.embedded_postgres and not settings.embedded_kafka


def test_settings_are_read_from_the_given_env_not_from_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PORT", "not-a-port")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-os-environ/x")
    settings = load(tmp_path, **EXPLICIT_TOKENS)
    assert settings.http_port == 8000 and settings.database_url is None


# -- tokens -------------------------------------------------------------------------------------

def test_api_tokens_are_parsed_to_a_map_from_token_to_manager(tmp_path: Path) -> None:
    settings = load(tmp_path, RESERVES_API_TOKENS="a=t1, b=t2", RESERVES_ERP_TOKENS="e1, e2")
    assert settings.api_tokens == {"t1": "a", "t2": "b"}
    assert settings.erp_tokens == frozenset({"e1", "e2"})
    assert settings.tokens_generated is False


def test_explicit_tokens_write_no_development_token_file(tmp_path: Path) -> None:
    load(tmp_path, **EXPLICIT_TOKENS)
    assert not (tmp_path / "dev-tokens.json").exists()


@pytest.mark.parametrize("raw", ["ivanov", "=t1", "ivanov=", "a=t1,b", "a=t1, =t2"])
def test_a_malformed_manager_token_pair_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="RESERVES_API_TOKENS"):
        load(tmp_path, RESERVES_API_TOKENS=raw, RESERVES_ERP_TOKENS="e1")


def test_one_token_for_two_managers_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RESERVES_API_TOKENS"):
        load(tmp_path, RESERVES_API_TOKENS="a=same,b=same", RESERVES_ERP_TOKENS="e1")


def test_a_token_both_a_managers_and_an_erp_connectors_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, RESERVES_API_TOKENS="a=shared", RESERVES_ERP_TOKENS="e1,shared")
    assert "both" in str(raised.value)


def test_a_token_both_a_managers_and_an_erp_connectors_names_the_variables(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, RESERVES_API_TOKENS="a=shared", RESERVES_ERP_TOKENS="shared")
    message = str(raised.value)
    assert "RESERVES_API_TOKENS" in message or "RESERVES_ERP_TOKENS" in message


@pytest.mark.parametrize("raw", ["http", "80.5", "8000x"])
def test_a_non_numeric_http_port_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="HTTP_PORT"):
        load(tmp_path, HTTP_PORT=raw, **EXPLICIT_TOKENS)


@pytest.mark.parametrize("raw", ["0", "-1", "-0.5", "a day"])
def test_a_request_ttl_that_is_not_positive_seconds_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="RESERVE_REQUEST_TTL"):
        load(tmp_path, RESERVE_REQUEST_TTL=raw, **EXPLICIT_TOKENS)


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_a_request_ttl_that_is_not_a_finite_number_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="RESERVE_REQUEST_TTL"):
        load(tmp_path, RESERVE_REQUEST_TTL=raw, **EXPLICIT_TOKENS)


def test_the_gil_switch_interval_is_half_a_millisecond_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, **EXPLICIT_TOKENS).switch_interval_s == 0.0005


def test_the_gil_switch_interval_is_taken_from_the_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, RESERVES_SWITCH_INTERVAL_S="0.005", **EXPLICIT_TOKENS)
    assert settings.switch_interval_s == 0.005


@pytest.mark.parametrize("raw", ["0", "-0.001", "fast", "nan", "inf", "2"])
def test_a_gil_switch_interval_that_is_not_seconds_up_to_one_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="RESERVES_SWITCH_INTERVAL_S"):
        load(tmp_path, RESERVES_SWITCH_INTERVAL_S=raw, **EXPLICIT_TOKENS)


# -- the development default --------------------------------------------------------------------

def test_without_tokens_development_tokens_are_generated_into_var(tmp_path: Path) -> None:
    settings = load(tmp_path)
    path = tmp_path / "dev-tokens.json"
    stored = json.loads(path.read_text())
    assert settings.tokens_generated is True
    assert sorted(settings.api_tokens.values()) == sorted(DEV_MANAGERS)
    assert settings.api_tokens == {tok: m for m, tok in stored["managers"].items()}
    assert settings.erp_tokens == frozenset(stored["erp"]) and len(settings.erp_tokens) == 1
    assert not set(settings.api_tokens) & settings.erp_tokens


def test_the_development_token_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    load(tmp_path)
    mode = stat.S_IMODE((tmp_path / "dev-tokens.json").stat().st_mode)
    assert mode == 0o600


def test_the_development_var_dir_is_created_when_missing(tmp_path: Path) -> None:
    var_dir = tmp_path / "nested" / "var"
    settings = load_settings({"RESERVES_VAR_DIR": str(var_dir)})
    assert (var_dir / "dev-tokens.json").is_file()
    assert settings.var_dir == var_dir.resolve()


def test_development_tokens_are_stable_across_loads(tmp_path: Path) -> None:
    first, second = load(tmp_path), load(tmp_path)
    assert first.api_tokens == second.api_tokens
    assert first.erp_tokens == second.erp_tokens
    assert second.tokens_generated is True


def test_development_tokens_are_random_per_var_dir(tmp_path: Path) -> None:
    one, two = load(tmp_path / "one"), load(tmp_path / "two")
    assert not set(one.api_tokens) & set(two.api_tokens)
    assert not one.erp_tokens & two.erp_tokens


def test_development_tokens_are_long_enough_to_be_secret(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert all(len(token) >= 24 for token in [*settings.api_tokens, *settings.erp_tokens])


def test_only_the_unset_token_variable_falls_back_to_development_tokens(tmp_path: Path) -> None:
    settings = load(tmp_path, RESERVES_API_TOKENS="a=t1")
    assert settings.api_tokens == {"t1": "a"}
    assert len(settings.erp_tokens) == 1 and "t1" not in settings.erp_tokens
    assert settings.tokens_generated is True


@pytest.mark.parametrize("raw", ["0", "-1", "70000"])
def test_an_http_port_outside_the_tcp_range_is_refused_naming_the_variable(
    tmp_path: Path, raw: str
) -> None:
    with pytest.raises(SettingsError, match="HTTP_PORT"):
        load(tmp_path, HTTP_PORT=raw, **EXPLICIT_TOKENS)


def test_erp_tokens_that_name_no_token_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RESERVES_ERP_TOKENS"):
        load(tmp_path, RESERVES_API_TOKENS="a=t1", RESERVES_ERP_TOKENS=" , ")


def test_tokens_from_the_environment_are_never_printed_beside_generated_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import _print_dev_tokens

    settings = load(tmp_path, RESERVES_API_TOKENS="ivanov=secret-from-env-123456789")
    assert (settings.generated_api_tokens, settings.generated_erp_tokens) == (False, True)
    _print_dev_tokens(settings)
    printed = capsys.readouterr().err
    assert "secret-from-env-123456789" not in printed
    assert next(iter(settings.erp_tokens)) in printed
