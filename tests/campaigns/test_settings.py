"""Settings: defaults, one clear error per malformed variable, the Twilio requirements, and the ``.env`` file."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.settings import Settings, SettingsError, load_settings

TWILIO_CREDENTIALS = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "secret-token"}
TWILIO_COMPLETE = {
    **TWILIO_CREDENTIALS,
    "TWILIO_FROM_NUMBER": "+8659312345678",
    "PUBLIC_BASE_URL": "https://survey.example.cn",
}

# Every variable load_settings reads, so a test's os.environ holds only what the test puts there.
ALL_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "SANLV_TELEPHONY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_API_BASE_URL",
    "PUBLIC_BASE_URL",
    "SANLV_TIMEZONE",
    "SECRET_KEY",
    "SANLV_TWILIO_HTTP_TIMEOUT",
    "SANLV_RING_TIMEOUT",
    "SANLV_TTS_LANGUAGE",
    "SANLV_TTS_VOICE",
    "SANLV_NAMESPACE",
    "SANLV_REPORT_MIN_SAMPLE",
    "SANLV_FOLLOWUP_OVERDUE_DAYS",
)


def test_defaults_match_the_documented_table() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.database_url == "sqlite:///sanlv.db"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.telephony == "simulator"
    assert settings.timezone == "Asia/Shanghai"
    assert str(settings.tz) == "Asia/Shanghai"
    assert settings.ring_timeout == 30
    assert settings.twilio_http_timeout == 10.0
    assert settings.namespace == "sanlv"
    assert settings.public_base_url is None
    assert settings.secret_key is None
    assert settings.log_format == "text"
    assert settings.metrics_bind is None


def test_blank_values_count_as_unset() -> None:
    settings = load_settings({"DATABASE_URL": "  ", "SANLV_TIMEZONE": "", "SANLV_RING_TIMEOUT": " "})

    assert settings == Settings()


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            **TWILIO_COMPLETE,
            "DATABASE_URL": "postgresql+psycopg://sanlv:p%40ss@db.internal/sanlv",
            "REDIS_URL": "redis://:pw@redis.internal:6380/2",
            "SANLV_TELEPHONY": "twilio",
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9999/",
            "SANLV_TIMEZONE": "Asia/Urumqi",
            "SECRET_KEY": "s3cret",
            "SANLV_TWILIO_HTTP_TIMEOUT": "2.5",
            "SANLV_RING_TIMEOUT": "45",
            "SANLV_TTS_LANGUAGE": "zh-CN",
            "SANLV_TTS_VOICE": "alice",
            "SANLV_NAMESPACE": "town-a",
        }
    )

    assert settings.database_url == "postgresql+psycopg://sanlv:p%40ss@db.internal/sanlv"
    assert settings.redis_url == "redis://:pw@redis.internal:6380/2"
    assert settings.telephony == "twilio"
    assert settings.twilio_account_sid == TWILIO_CREDENTIALS["TWILIO_ACCOUNT_SID"]
    assert settings.twilio_auth_token == "secret-token"
    assert settings.twilio_from_number == "+8659312345678"
    assert settings.twilio_api_base_url == "http://127.0.0.1:9999"  # trailing slash dropped
    assert settings.public_base_url == "https://survey.example.cn"
    assert settings.timezone == "Asia/Urumqi"
    assert settings.secret_key == "s3cret"
    assert settings.twilio_http_timeout == 2.5
    assert settings.ring_timeout == 45
    assert (settings.tts_language, settings.tts_voice) == ("zh-CN", "alice")
    assert settings.namespace == "town-a"


def test_a_public_base_url_over_plain_http_names_the_fix() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"PUBLIC_BASE_URL": "http://survey.example.cn"})

    assert caught.value.summary() == (
        "configuration: PUBLIC_BASE_URL='http://survey.example.cn' must start with https:// (plain http only for"
        " a loopback host such as 127.0.0.1 or localhost)"
    )


def test_settings_carry_no_webhook_key_of_their_own() -> None:
    # Without Twilio the deployment generates its key and keeps it in the database (campaigns.secrets).
    assert not hasattr(load_settings({}), "webhook_token")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "sanlv.db"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "unix://"),
        ("SANLV_TIMEZONE", "Asia/Nowhere"),
        ("SANLV_TIMEZONE", "Beijing"),
        ("SANLV_TIMEZONE", "Asia"),  # a folder of the zone database, not a zone
        ("SANLV_TIMEZONE", "../../etc/passwd"),
        ("SANLV_TIMEZONE", "+08:00"),
        ("PUBLIC_BASE_URL", "survey.example.cn"),
        ("PUBLIC_BASE_URL", "ftp://survey.example.cn"),
        ("PUBLIC_BASE_URL", "https://"),
        ("PUBLIC_BASE_URL", "https://my_survey.example.cn"),  # "_" is not allowed in a host name
        ("PUBLIC_BASE_URL", "http://survey.example.cn"),  # clear text over the internet
        ("PUBLIC_BASE_URL", "http://10.0.0.5:8000"),
        ("PUBLIC_BASE_URL", "http://127.0.0.1.example.cn"),
        ("TWILIO_API_BASE_URL", "127.0.0.1:9999"),
        ("SANLV_TELEPHONY", "asterisk"),
        ("SANLV_TELEPHONY", "Twilio "),
        ("SANLV_RING_TIMEOUT", "thirty"),
        ("SANLV_RING_TIMEOUT", "1.5"),
        ("SANLV_RING_TIMEOUT", "0"),
        ("SANLV_RING_TIMEOUT", "-5"),
        ("SANLV_TWILIO_HTTP_TIMEOUT", "soon"),
        ("SANLV_TWILIO_HTTP_TIMEOUT", "0"),
        ("SANLV_TWILIO_HTTP_TIMEOUT", "nan"),
        ("SANLV_TWILIO_HTTP_TIMEOUT", "inf"),
        ("SANLV_REPORT_MIN_SAMPLE", "many"),
        ("SANLV_FOLLOWUP_OVERDUE_DAYS", "0"),
        ("SANLV_LOG_FORMAT", "xml"),
        ("SANLV_LOG_FORMAT", "JSON"),
        ("SANLV_METRICS_BIND", "9100"),
        ("SANLV_METRICS_BIND", "0.0.0.0:"),
        ("SANLV_METRICS_BIND", ":9100"),
        ("SANLV_METRICS_BIND", "0.0.0.0:70000"),
        ("SANLV_METRICS_BIND", "0.0.0.0:metrics"),
    ],
)
def test_a_malformed_variable_is_named_in_the_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})

    message = str(caught.value)
    assert message.startswith(f"{name}=")
    assert value.strip() in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "rediss://cache.example.cn:6380/0"),
        ("REDIS_URL", "unix:///run/redis/redis.sock?db=3"),
        ("DATABASE_URL", "sqlite:////var/lib/sanlv/sanlv.db"),
        ("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        ("PUBLIC_BASE_URL", "http://localhost:5000"),
        ("PUBLIC_BASE_URL", "http://[::1]:5000"),
        ("PUBLIC_BASE_URL", "http://127.0.0.2:8000"),
        ("PUBLIC_BASE_URL", "https://gov-survey.example.cn/sanlv"),
        ("SANLV_TIMEZONE", "UTC"),
        ("SANLV_RING_TIMEOUT", "20"),
        ("SANLV_LOG_FORMAT", "json"),
        ("SANLV_METRICS_BIND", "0.0.0.0:9100"),
        ("SANLV_METRICS_BIND", "[::1]:9100"),
    ],
)
def test_well_formed_values_are_accepted(name: str, value: str) -> None:
    settings = load_settings({name: value})

    assert value in {
        settings.log_format,
        settings.metrics_bind,
        settings.redis_url,
        settings.database_url,
        settings.public_base_url,
        settings.timezone,
        str(settings.ring_timeout),
    }


def test_twilio_is_the_default_provider_once_credentials_are_set() -> None:
    settings = load_settings(TWILIO_COMPLETE)

    assert settings.telephony == "twilio"


def test_the_simulator_can_be_chosen_even_with_credentials() -> None:
    settings = load_settings({**TWILIO_CREDENTIALS, "SANLV_TELEPHONY": "simulator"})

    assert settings.telephony == "simulator"
    assert settings.twilio_auth_token == "secret-token"


def test_a_sid_without_a_token_keeps_the_simulator() -> None:
    assert load_settings({"TWILIO_ACCOUNT_SID": "AC123"}).telephony == "simulator"


@pytest.mark.parametrize("missing", ["TWILIO_FROM_NUMBER", "PUBLIC_BASE_URL"])
def test_twilio_by_default_requires_its_caller_id_and_public_url(missing: str) -> None:
    environ = {k: v for k, v in TWILIO_COMPLETE.items() if k != missing}

    with pytest.raises(SettingsError, match=f"^{missing} is required when SANLV_TELEPHONY=twilio$"):
        load_settings(environ)


@pytest.mark.parametrize(
    "missing", ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "PUBLIC_BASE_URL"]
)
def test_twilio_chosen_explicitly_requires_everything(missing: str) -> None:
    environ = {k: v for k, v in TWILIO_COMPLETE.items() if k != missing}
    environ["SANLV_TELEPHONY"] = "twilio"

    with pytest.raises(SettingsError, match=f"^{missing} is required"):
        load_settings(environ)


def test_settings_are_frozen() -> None:
    settings = load_settings({})

    with pytest.raises(AttributeError):
        settings.database_url = "sqlite://"  # type: ignore[misc]


# --- the .env file ---------------------------------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_dotenv_file_supplies_variables(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# deployment of 城关镇\n"
        "DATABASE_URL=sqlite:///from-dotenv.db\n"
        "SANLV_TIMEZONE=Asia/Urumqi\n"
        'SECRET_KEY="quoted value"\n',
        encoding="utf-8",
    )

    settings = load_settings(environ=None, dotenv=dotenv)

    assert settings.database_url == "sqlite:///from-dotenv.db"
    assert settings.timezone == "Asia/Urumqi"
    assert settings.secret_key == "quoted value"


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=sqlite:///from-dotenv.db\nSANLV_NAMESPACE=from-dotenv\n", encoding="utf-8")
    clean_environ.setenv("DATABASE_URL", "sqlite:///from-environment.db")

    settings = load_settings(environ=None, dotenv=dotenv)

    assert settings.database_url == "sqlite:///from-environment.db"
    assert settings.namespace == "from-dotenv"


def test_a_bad_value_in_the_dotenv_file_is_named(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SANLV_RING_TIMEOUT=forever\n", encoding="utf-8")

    with pytest.raises(SettingsError, match="^SANLV_RING_TIMEOUT='forever'"):
        load_settings(environ=None, dotenv=dotenv)


def test_a_missing_dotenv_file_is_fine(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("SANLV_NAMESPACE", "from-environment")

    settings = load_settings(environ=None, dotenv=tmp_path / "absent.env")

    assert settings.namespace == "from-environment"
    assert settings.database_url == "sqlite:///sanlv.db"


def test_an_explicit_environ_ignores_the_dotenv_file(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SANLV_NAMESPACE=from-dotenv\n", encoding="utf-8")

    assert load_settings({}, dotenv=dotenv).namespace == "sanlv"


def test_the_default_dotenv_is_the_working_directory(tmp_path: Path, clean_environ: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SANLV_NAMESPACE=cwd-dotenv\n", encoding="utf-8")
    clean_environ.chdir(tmp_path)

    assert load_settings().namespace == "cwd-dotenv"
