import pytest
from pydantic import SecretStr

from otp_service.settings import EMBEDDED_DATABASE_URL, Rate, Settings, SettingsError, load_settings

SECRET = "x" * 32


def test_embedded_default_needs_no_secret_and_generates_one() -> None:
    a, b = load_settings(), load_settings()
    assert a.is_embedded
    assert a.database_url == EMBEDDED_DATABASE_URL
    assert len(a.secret) >= 32
    assert a.secret != b.secret


K1, K2 = "k1" + "x" * 30, "k2" + "y" * 30


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert (s.code_length, s.code_ttl, s.max_attempts, s.rate_limit_ttl) == (6, 300, 5, 60)
    assert s.per_account_daily_limit == 10
    assert s.throttle_rates == {
        "otp_send": "3/minute",
        "otp_verify": "10/minute",
        "otp_send_subnet": "30/minute",
        "otp_verify_subnet": "100/minute",
        "otp_status": "60/minute",
    }
    assert (s.ipv6_client_prefix, s.ipv4_subnet_prefix, s.ipv6_subnet_prefix) == (64, 24, 48)
    assert (s.conversion_min_sends, s.conversion_min_ratio, s.conversion_guard_rate) == (20, 0.1, "6/hour")
    assert (s.check_deliverability, s.dns_nameservers, s.dns_timeout) == ("auto", [], 2.0)
    assert s.deliverability_checked is False  # auto, with the console provider
    assert (s.captcha_provider, s.captcha_secret, s.captcha_verify_url) == (None, None, None)
    assert s.global_daily_limits == {"email": 50000}
    assert s.send_rate == 14
    assert s.email_provider == "console"
    assert s.sns_cert_host_pattern == r"^sns\.[a-z]{2}(-[a-z]+)+-\d+\.amazonaws\.com(\.cn)?$"


def test_rates_left_out_keep_their_defaults() -> None:
    s = load_settings(throttle_rates={"otp_send": "5/minute", "otp_verify_subnet": "7/second"})
    assert s.throttle_rates == {
        "otp_send": "5/minute",
        "otp_verify": "10/minute",
        "otp_send_subnet": "30/minute",
        "otp_verify_subnet": "7/second",
        "otp_status": "60/minute",
    }


@pytest.mark.parametrize(
    ("value", "provider", "checked"),
    [("auto", "console", False), ("auto", "ses", True), ("TRUE", "console", True), ("false", "ses", False)],
)
def test_deliverability_switch(value: str, provider: str, checked: bool) -> None:
    assert (
        load_settings(check_deliverability=value, email_provider=provider).deliverability_checked is checked
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTP_REDIS_URL": "redis://127.0.0.1:6379/0"}, "OTP_SECRET_KEY is required"),
        ({"OTP_DATABASE_URL": "postgresql+asyncpg://u@h/db"}, "OTP_SECRET_KEY is required"),
        ({"OTP_SECRET_KEY": "short"}, "at least 16 characters"),
        (
            {"OTP_THROTTLE_RATES": '{"otp_send": "3/fortnight", "otp_verify": "1/day"}'},
            "OTP_THROTTLE_RATES",
        ),
        ({"OTP_THROTTLE_RATES": '{"otp_sned": "3/minute"}'}, "unknown rate 'otp_sned'"),
        (
            {"OTP_ADMIN_API_KEYS": '["' + "k" * 31 + '"]'},
            "OTP_ADMIN_API_KEYS: each key must be at least 32 characters",
        ),
        ({"OTP_CONVERSION_GUARD_RATE": "6/fortnight"}, "OTP_CONVERSION_GUARD_RATE"),
        ({"OTP_CHECK_DELIVERABILITY": "maybe"}, "OTP_CHECK_DELIVERABILITY"),
        ({"OTP_DNS_NAMESERVERS": '["127.0.0.1:99999"]'}, "OTP_DNS_NAMESERVERS"),
        ({"OTP_IPV6_CLIENT_PREFIX": "40"}, "OTP_IPV6_SUBNET_PREFIX must not be longer"),
        ({"OTP_CAPTCHA_PROVIDER": "turnstile"}, "OTP_CAPTCHA_SECRET is required"),
        ({"OTP_CAPTCHA_PROVIDER": "clippy", "OTP_CAPTCHA_SECRET": "s"}, "OTP_CAPTCHA_PROVIDER"),
        ({"OTP_THROTTLE_RATES": "not json"}, "OTP_THROTTLE_RATES"),
        ({"OTP_GLOBAL_DAILY_LIMITS": '{"email": -1}'}, "OTP_GLOBAL_DAILY_LIMITS"),
        ({"OTP_TRUSTED_PROXIES": '["10.0.0.0/33"]'}, "OTP_TRUSTED_PROXIES"),
        ({"OTP_EMAIL_PROVIDER": "carrier-pigeon"}, "OTP_EMAIL_PROVIDER"),
        ({"OTP_EMAIL_PROVIDER": "resend"}, "OTP_RESEND_API_KEY is required"),
        ({"OTP_CODE_LENGTH": "3"}, "OTP_CODE_LENGTH"),
        ({"OTP_SNS_CERT_HOST_PATTERN": "(unclosed"}, "OTP_SNS_CERT_HOST_PATTERN"),
        ({"OTP_DATABASE_URL": "mysql://x/y", "OTP_SECRET_KEY": SECRET}, "OTP_DATABASE_URL: must be"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match="invalid configuration") as info:
        load_settings()
    assert expected in str(info.value)


def test_json_lists_and_dicts_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTP_TRUSTED_PROXIES", '["10.0.0.0/8", "::1/128"]')
    monkeypatch.setenv("OTP_GLOBAL_DAILY_LIMITS", '{"email": 7}')
    monkeypatch.setenv("OTP_ADMIN_API_KEYS", f'["{K1}", "{K2}"]')
    monkeypatch.setenv("OTP_SECRET_KEY", SECRET)
    monkeypatch.setenv("OTP_REDIS_URL", "redis://127.0.0.1:6379/0")
    s = load_settings()
    assert [str(n) for n in s.trusted_networks()] == ["10.0.0.0/8", "::1/128"]
    assert s.global_daily_limits == {"email": 7}
    assert [k.get_secret_value() for k in s.admin_api_keys] == [K1, K2]
    assert s.secret == SECRET.encode()
    assert K1 not in repr(s)
    assert SECRET not in repr(s)


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("3/minute", 3, 60),
        ("10/second", 10, 1),
        ("5/hour", 5, 3600),
        ("1/day", 1, 86400),
        ("2/minutes", 2, 60),
    ],
)
def test_rates_parse_like_drf(text: str, limit: int, period: int) -> None:
    assert Rate.parse(text) == Rate(limit, period)


@pytest.mark.parametrize("text", ["0/minute", "3/min", "three/minute", "3", "/minute"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate|at least"):
        Rate.parse(text)


def test_fallback_must_differ_from_primary() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        load_settings(email_provider="ses", email_fallback_provider="ses")


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.code_ttl = 1  # type: ignore[misc]


SMTP_SET_UP = {"secret_key": SECRET, "email_provider": "smtp", "smtp_url": "smtp://smtp.example"}


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("smtp_url", "smtp://user:p%40ss%23w%2Frd%3F@smtp.example:587"),
        ("redis_url", "redis://:p%40ss%23w%2Frd%3F@127.0.0.1:6379/0"),
        ("database_url", "postgresql+asyncpg://u:p%40ss%23w%2Frd%3F@db.example:5432/otp"),
        ("website_url", "https://social.example/@brand"),
    ],
)
def test_a_percent_encoded_password_is_accepted(name: str, url: str) -> None:
    value = getattr(load_settings(**{**SMTP_SET_UP, name: url}), name)
    assert (value.get_secret_value() if isinstance(value, SecretStr) else value) == url


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("smtp_url", "smtp://user:p@ss@smtp.example:587"),
        ("redis_url", "redis://:p@ss@127.0.0.1:6379/0"),
        ("database_url", "postgresql+asyncpg://u:p@ss@db.example/otp"),
    ],
)
def test_a_raw_at_sign_in_a_password_is_refused_as_ambiguous(name: str, url: str) -> None:
    """urllib takes the last '@' as the end of the password, SQLAlchemy the first: one would
    connect to a host made of part of the password."""
    with pytest.raises(SettingsError, match="must be percent-encoded") as refused:
        load_settings(**{**SMTP_SET_UP, name: url})
    assert f"OTP_{name.upper()}" in str(refused.value)
    assert "ss@" not in str(refused.value)


def test_a_validation_error_quotes_no_value() -> None:
    """Settings built directly (not through load_settings) raise pydantic's ValidationError, whose
    text would otherwise carry each input_value."""
    with pytest.raises(ValueError, match="redis_url") as refused:
        Settings(redis_url="redis://:Sup3r#s/cr?t@h:6379/0", secret_key=SECRET)
    assert "Sup3r" not in str(refused.value)
