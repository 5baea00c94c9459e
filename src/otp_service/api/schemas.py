from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from otp_service.errors import PROBLEM_TYPE_BASE
from otp_service.locales import Locale
from otp_service.validation.captcha import MAX_TOKEN


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


class SendIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "user@example.com"}]})
    email: str = Field(max_length=320, description="The address to send a code to")
    captcha_token: str | None = Field(
        default=None,
        max_length=MAX_TOKEN,
        description="The captcha widget's token; required when the operator turned the captcha on",
    )
    locale: Locale | None = Field(
        default=None,
        description="The email's language: en, zh-CN or bilingual (default: OTP_DEFAULT_LOCALE)",
    )


class PendingOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "pending",
                    "expires_in": 300,
                    "resend_after": 60,
                    "send_id": "q1dL3x8_n2VtcYwZb7RkA",
                }
            ]
        }
    )
    status: Literal["pending"]
    expires_in: int = Field(description="Seconds the code lives")
    resend_after: int = Field(description="Seconds before another code can be requested")
    send_id: str = Field(description="This send's id, for GET /api/v1/auth/otp/sends/{send_id}")


class SendStatusOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "delivered", "updated_at": "2026-12-02T09:30:12+00:00"}]}
    )
    status: Literal["queued", "sent", "delivered", "delayed", "undeliverable", "failed", "superseded"]
    updated_at: str = Field(description="When the status last changed (RFC 3339, UTC, whole seconds)")


class VerifyIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "user@example.com", "code": "123456"}]}
    )
    email: str = Field(max_length=320)
    code: str = Field(min_length=1, max_length=10, pattern=r"^[0-9]+$")


class NotMeIn(BaseModel):
    token: str = Field(min_length=1, max_length=2048, description="The `t` of the link's fragment")


class ApprovedOut(BaseModel):
    status: Literal["approved"]
    test: Literal[True] | None = Field(
        default=None, description="Only for a test recipient's fixed code (OTP_TEST_RECIPIENTS): true"
    )
    email: str
    token: str | None = Field(
        default=None,
        description="When verification tokens are configured: a JWT (EdDSA or ES256) with sub = the address, "
        "checkable against /.well-known/jwks.json",
    )
    token_type: Literal["Bearer"] | None = None
    expires_in: int | None = Field(default=None, description="Seconds the token is valid")


class Problem(BaseModel):
    """RFC 9457 problem details, with the stable machine-readable `code`."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    retry_after: int | None = Field(default=None, description="On 429 and 503: seconds to wait")


def problem_responses(by_status: dict[int, list[str]]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem+json errors, one example per code."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, codes in by_status.items():
        examples = {
            code: {
                "value": {
                    "type": PROBLEM_TYPE_BASE + code,
                    "title": code.replace("_", " "),
                    "status": status,
                    "detail": code.replace("_", " "),
                    "code": code,
                    **({"retry_after": 60} if status in (429, 503) else {}),
                }
            }
            for code in codes
        }
        out[status] = {
            "description": ", ".join(f"`{c}`" for c in codes),
            "model": Problem,
            "content": {"application/problem+json": {"examples": examples}},
        }
    return out


class WebhookOut(BaseModel):
    status: Literal["accepted", "duplicate"]
