"""Fuzzing: schemathesis against the service's own OpenAPI document (a real process on Redis and
PostgreSQL), and hypothesis properties for address validation and the webhook parsers."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otp_service.errors import ServiceError
from otp_service.validation.address import AddressValidator, normalize_email
from otp_service.webhooks.resend import ResendWebhook
from otp_service.webhooks.sns import normalise_ses
from tests.support import ServiceProcess, service_env

VALIDATOR = AddressValidator()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def test_schemathesis_finds_no_server_errors_and_no_contract_drift(
    database_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = service_env(
        database_url, key_prefix, OTP_ADMIN_API_KEYS='["fuzz-admin-key-0123456789-0123456789"]', OTP_RESEND_WEBHOOK_SECRET="whsec_dGVzdHRlc3R0ZXN0dGVzdA==",
        OTP_CONVERSION_MIN_SENDS="1000000", OTP_THROTTLE_RATES='{"otp_send": "100000/minute", "otp_verify": "100000/minute", "otp_send_subnet": "100000/minute", "otp_verify_subnet": "100000/minute"}',
    )  # fmt: skip
    # A body over 4 KiB (a captcha_token past its maxLength can make one) is refused with the
    # documented 413 before it is parsed: a rejection like 422, so the negative-data check lists it.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = "
        + json.dumps(
            ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
        )
        + "\n"
    )
    with ServiceProcess(env, tmp_path) as service:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{service.url}/openapi.json",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "60",
             "-H", "Authorization: Bearer fuzz-admin-key-0123456789-0123456789", "--no-color", "--seed", "20261122"],
            capture_output=True, text=True, timeout=240, check=False,
            cwd=tmp_path,  # its crash cache (.schemathesis/) stays out of the checkout
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    assert "passed" in run.stdout
    assert "http.unhandled_error" not in service.err.read_text()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80) | st.emails().map(str))
def test_address_validation_never_raises_anything_but_a_refusal(raw: str) -> None:
    email: str | None = None
    status = 0
    try:
        email = VALIDATOR.check(raw)
    except ServiceError as exc:
        status = exc.status
    if email is None:
        assert status in (400, 422)
    else:
        assert email == email.lower()
        assert normalize_email(email) == email  # idempotent


@settings(max_examples=300)
@given(st.emails().map(str))
def test_normalisation_is_idempotent(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except ServiceError:
        return
    assert normalize_email(once) == once


_ATOM_CHARS = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
_dot_atoms = st.lists(st.text(_ATOM_CHARS[:-1], min_size=1, max_size=14), min_size=1, max_size=7).map(
    ".".join
)
_local_parts = _dot_atoms | st.text(_ATOM_CHARS, max_size=70) | st.text(max_size=12) | st.just("a" * 64)
_domains = (
    st.sampled_from(["example.org", "Gmail.COM", "bücher.de", "xn--bcher-kva.de", "localhost", "a.b",
                     "1.2.3.4", "[1.2.3.4]", "ex ample.org", "example.org.", "-x.org", "x-.org",
                     "test", "foo.test", "foo.invalid", "ex_ample.org", "ÉXAMPLE.org", "a" * 250 + ".org",
                     ".".join(["b" * 60, "c" * 60, "d" * 60, "e" * 30, "org"])])
    | st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True)
    | st.text(max_size=20)
)  # fmt: skip


def _email_validator_alone(raw: str) -> str | None:
    from email_validator import EmailNotValidError, validate_email

    if len(raw) > 320:
        return None
    try:
        return str(
            validate_email(raw.strip(), check_deliverability=False, allow_quoted_local=False).normalized
        ).lower()
    except EmailNotValidError:
        return None


@settings(max_examples=1500)
@given(_local_parts, _domains, st.sampled_from(["", " ", "\t"]))
def test_the_fast_path_agrees_with_email_validator(local: str, domain: str, pad: str) -> None:
    """normalize_email's ASCII fast path (cached domain verdicts) accepts exactly what
    email-validator accepts, normalised the same way."""
    raw = f"{pad}{local}@{domain}{pad}"
    try:
        ours: str | None = normalize_email(raw)
    except ServiceError:
        ours = None
    assert ours == _email_validator_alone(raw), raw


@settings(max_examples=300)
@given(json_values, st.text(min_size=1, max_size=20))
def test_resend_parser_takes_any_json(payload: Any, event_id: str) -> None:
    if isinstance(payload, dict):
        event = ResendWebhook.normalise(event_id, payload)
        assert all("@" in r.email for r in event.recipients)


@settings(max_examples=300)
@given(json_values)
def test_ses_parser_takes_any_message(ses: Any) -> None:
    event = normalise_ses(
        {"MessageId": "m-1", "Message": json.dumps(ses), "Timestamp": "2026-11-22T00:00:00Z"}
    )
    assert all("@" in r.email for r in event.recipients)
    event = normalise_ses(
        {"MessageId": "m-2", "Message": json.dumps({"notificationType": "Bounce", "bounce": ses})}
    )
    assert event.provider == "ses"


ses_shaped = st.fixed_dictionaries(
    {},
    optional={
        "notificationType": st.sampled_from(["Bounce", "Complaint", "Delivery"]) | json_values,
        "eventType": st.sampled_from(["Bounce", "Complaint"]) | json_values,
        "bounce": st.fixed_dictionaries({}, optional={
            "bounceType": st.sampled_from(["Permanent", "Transient"]) | json_values,
            "bouncedRecipients": json_values | st.lists(st.fixed_dictionaries({}, optional={
                "emailAddress": st.emails().map(str) | json_values, "status": json_values})),
            "timestamp": json_values}),
        "complaint": st.fixed_dictionaries({}, optional={
            "complainedRecipients": json_values | st.lists(st.fixed_dictionaries({}, optional={
                "emailAddress": st.emails().map(str) | json_values})),
            "timestamp": json_values}),
        "mail": json_values | st.fixed_dictionaries({}, optional={"messageId": json_values}),
    },
)  # fmt: skip


@settings(max_examples=500)
@given(ses_shaped)
def test_ses_parser_takes_any_value_under_the_real_keys(ses: dict[str, Any]) -> None:
    event = normalise_ses({"MessageId": "m-3", "Message": json.dumps(ses)})
    assert all("@" in r.email for r in event.recipients)
    assert event.message_id is None or isinstance(event.message_id, str)


@settings(max_examples=300)
@given(st.fixed_dictionaries({}, optional={"type": json_values, "created_at": json_values,
                                           "data": json_values | st.fixed_dictionaries({}, optional={
                                               "to": json_values | st.lists(st.emails().map(str)),
                                               "email_id": json_values, "bounce": json_values})}))  # fmt: skip
def test_resend_parser_takes_any_value_under_the_real_keys(payload: dict[str, Any]) -> None:
    event = ResendWebhook.normalise("msg_1", payload)
    assert all("@" in r.email for r in event.recipients)
