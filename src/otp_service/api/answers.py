"""A finished HTTP answer (status, JSON body, headers), built once and sent either through
Starlette (`to_response`) or straight to the ASGI server (api/hot.py)."""

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from otp_service.errors import ServiceError
from otp_service.metrics import REJECTIONS

JSON = "application/json"
PROBLEM_MEDIA_TYPE = "application/problem+json"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Built once: json.dumps with non-default options builds an encoder per call."""


def json_bytes(content: Any) -> bytes:
    return _ENCODER.encode(content).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    media_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    raw_headers: list[tuple[bytes, bytes]] = field(init=False, repr=False, compare=False)
    """As the ASGI server takes them; built once per answer, never mutated."""

    def __post_init__(self) -> None:
        raw = [
            (b"content-type", self.media_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers),
        ]
        object.__setattr__(self, "raw_headers", raw)

    def to_response(self) -> Response:
        return Response(self.body, self.status, headers=dict(self.headers), media_type=self.media_type)


_REJECTED: dict[str, Any] = {}
"""Label children by code, resolved once each."""


def problem_answer(exc: ServiceError, instance: str | None) -> Answer:
    """RFC 9457 problem+json for a domain error, counted by code."""
    counter = _REJECTED.get(exc.code)
    if counter is None:
        counter = _REJECTED[exc.code] = REJECTIONS.labels(exc.code)
    counter.inc()
    return Answer(
        exc.status,
        json_bytes(exc.to_problem(instance)),
        PROBLEM_MEDIA_TYPE,
        tuple(exc.headers().items()),
    )


def unexpected_error_answer(instance: str) -> Answer:
    """The 500 for a bug: problem+json that says nothing about what went wrong."""
    return Answer(
        500, json_bytes(ServiceError("An unexpected error occurred").to_problem(instance)), PROBLEM_MEDIA_TYPE
    )
