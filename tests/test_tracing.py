"""One trace per code (issue 31, item 6; README, "Tracing (OpenTelemetry)"): a real service
(`otp-service serve` on PostgreSQL and Redis, its worker calling a Resend fake on loopback)
configured by the standard OTEL_* variables only, exporting to a real OTLP/HTTP receiver on
loopback that decodes each ExportTraceServiceRequest. And without those variables (or without
the extra), nothing of OpenTelemetry loads beyond what FastAPI itself imports."""

import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis

from otp_service import tracing
from otp_service.delivery.queue import TRACE, RedisJobQueue
from otp_service.otp.store import RedisCodeStore, SendStatus
from otp_service.redisio import EmbeddedRedis, RedisKeys, open_redis
from otp_service.sends import DeliveryStatus
from tests.conftest import REDIS_URL
from tests.support import (
    FakeClock,
    QuietHandler,
    ServiceProcess,
    ThreadedServer,
    clean_env,
    free_port,
    service_env,
    unique_email,
)
from tests.test_resend_webhooks import SECRET, event, signed
from tests.test_store_contract import send_req

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
SENDS = "/api/v1/auth/otp/sends"
RESEND_EVENTS = "/api/v1/auth/resend-events/"
ADMIN_KEY = "admin-key-for-the-tracing-tests-0123456789"
WIDE = {"otp_send": "1000/minute", "otp_send_subnet": "1000/minute", "otp_verify": "1000/minute",
        "otp_verify_subnet": "1000/minute", "otp_status": "1000/minute"}  # fmt: skip
SERVICE_NAME = "otp-service-under-test"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        found[pair.key] = _value(pair.value)
    return found


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # '' for a root span
    name: str
    kind: int
    attributes: dict[str, Any]
    links: list[Link]
    status: int
    resource: dict[str, Any]


@dataclass
class OtlpReceiver(ThreadedServer):
    """POST /v1/traces on a real HTTP server on loopback (a thread of its own, so it answers
    whatever the test is doing): each body decoded as the collector would, every span kept, and
    every raw body kept too for the checks that nothing secret was sent at all."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name,
                        span.kind, _attributes(span.attributes),
                        [Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                         for link in span.links],
                        span.status.code, resource,
                    ))  # fmt: skip
        with self._lock:
            self.bodies.append(body)
            self.spans.extend(received)

    def start(self) -> None:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces", self.path
                receiver._receive(body)
                self.answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        self.serve(Handler)

    def wait_for(self, wanted: Callable[[ReceivedSpan], bool], timeout: float = 15) -> ReceivedSpan:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if wanted(s)]
            if found:
                assert len(found) == 1, found
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no such span among {[s.name for s in self.spans]}")

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@dataclass(frozen=True)
class Email:
    to: str
    code: str
    message_id: str


@dataclass
class ResendFake(ThreadedServer):
    """Resend's POST /emails on loopback (a thread of its own): every email taken is kept."""

    emails: list[Email] = field(default_factory=list)

    def start(self) -> None:
        fake = self

        class Handler(QuietHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                self.answer(status, json.dumps(body).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/emails":
                    self._answer(404, {"name": "not_found", "message": "no such route"})
                    return
                to = body["to"][0] if isinstance(body["to"], list) else body["to"]
                code = re.search(r"Your verification code is: (\d+)", body["text"])
                assert code is not None
                message_id = f"re-{secrets.token_hex(8)}"
                fake.emails.append(Email(to, code[1], message_id))
                self._answer(200, {"id": message_id})

            def do_GET(self) -> None:  # the sender check's GET /domains: nothing to say
                self._answer(404, {"name": "not_found", "message": "no such route"})

        self.serve(Handler)

    def email_to(self, address: str, timeout: float = 15) -> Email:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.emails if e.to == address]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no email to {address}")


@dataclass
class Traced:
    service: ServiceProcess
    receiver: OtlpReceiver
    resend: ResendFake
    http: httpx.Client


def without_otel(env: dict[str, str]) -> dict[str, str]:
    """`env` without any OTEL_ variable the test process may have."""
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Traced]:
    """One traced service for the module (each test sends to addresses of its own)."""
    receiver, resend = OtlpReceiver(), ResendFake()
    receiver.start()
    resend.start()
    prefix = f"otptest{secrets.token_hex(5)}"
    env = without_otel(service_env(
        database_url, prefix,
        OTP_EMAIL_PROVIDER="resend", OTP_RESEND_API_KEY="re_test_key", OTP_RESEND_API_URL=resend.url,
        OTP_RESEND_WEBHOOK_SECRET=SECRET, OTP_ADMIN_API_KEYS=json.dumps([ADMIN_KEY]),
        OTP_THROTTLE_RATES=json.dumps(WIDE), OTP_CONVERSION_MIN_SENDS="1000000",
    ))  # fmt: skip
    # The standard variables only: the endpoint (the exporter is then OTLP over http/protobuf),
    # the service's name, and a short batch delay so that spans arrive within the test.
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME=SERVICE_NAME,
               OTEL_BSP_SCHEDULE_DELAY="50")  # fmt: skip
    service = ServiceProcess(env, tmp_path_factory.mktemp("traced"))
    try:
        with service, httpx.Client(base_url=service.url, timeout=10) as http:
            yield Traced(service, receiver, resend, http)
    finally:
        receiver.stop()
        resend.stop()
        redis = SyncRedis.from_url(REDIS_URL)
        keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis.delete(*keys)
        redis.close()


def request_id() -> str:
    return f"tracing-test-{secrets.token_hex(6)}"


def send(traced: Traced, email: str, headers: dict[str, str]) -> str:
    res = traced.http.post(SEND, json={"email": email}, headers=headers)
    assert res.status_code == 202, res.text
    send_id: str = res.json()["send_id"]
    return send_id


def request_span(traced: Traced, rid: str) -> ReceivedSpan:
    return traced.receiver.wait_for(lambda s: s.attributes.get("otp.request_id") == rid)


def provider_call(traced: Traced, trace_id: str) -> ReceivedSpan:
    return traced.receiver.wait_for(lambda s: s.name == "otp.provider_call" and s.trace_id == trace_id)


def wait_for_status(traced: Traced, send_id: str, status: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if traced.http.get(f"{SENDS}/{send_id}").json()["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"send {send_id} never reached {status}")


def test_one_send_is_one_trace_from_the_request_to_the_provider_call(traced: Traced) -> None:
    email, rid = unique_email(), request_id()
    send(traced, email, {"X-Request-ID": rid})
    request = request_span(traced, rid)
    call = provider_call(traced, request.trace_id)

    assert request.parent_span_id == ""  # nobody's trace came with it: its own root
    assert (request.name, request.kind) == (f"POST {SEND}", SpanProto.SPAN_KIND_SERVER)
    assert request.attributes["http.route"] == SEND
    assert request.attributes["http.response.status_code"] == 202
    assert (call.parent_span_id, call.kind) == (request.span_id, SpanProto.SPAN_KIND_CLIENT)
    assert call.attributes["otp.provider"] == "resend"
    assert call.attributes["otp.message_id"] == traced.resend.email_to(email).message_id
    assert call.attributes["otp.attempt"] == 1
    assert {s.span_id for s in traced.receiver.trace(request.trace_id)} == {request.span_id, call.span_id}
    assert request.resource["service.name"] == call.resource["service.name"] == SERVICE_NAME


def test_an_incoming_traceparent_is_continued(traced: Traced) -> None:
    email, rid = unique_email(), request_id()
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    send(traced, email, {"X-Request-ID": rid, "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    request = request_span(traced, rid)
    call = provider_call(traced, caller_trace)
    assert (request.trace_id, request.parent_span_id) == (caller_trace, caller_span)
    assert call.parent_span_id == request.span_id


def test_a_provider_event_is_linked_to_the_provider_call_through_the_message_id(traced: Traced) -> None:
    email = unique_email()
    send_id = send(traced, email, {"X-Request-ID": (rid := request_id())})
    call = provider_call(traced, request_span(traced, rid).trace_id)
    wait_for_status(traced, send_id, "sent")  # the worker has kept the call's context by now

    delivered = event("email.delivered", email)
    delivered["data"]["email_id"] = traced.resend.email_to(email).message_id
    body, headers = signed(delivered)
    res = traced.http.post(
        RESEND_EVENTS, content=body, headers={**headers, "X-Request-ID": (hook := request_id())}
    )
    assert res.status_code < 300, res.text
    webhook = request_span(traced, hook)
    provider_event = traced.receiver.wait_for(
        lambda s: s.name == "otp.provider_event" and s.trace_id == webhook.trace_id
    )

    assert webhook.attributes["http.route"] == RESEND_EVENTS
    assert provider_event.parent_span_id == webhook.span_id  # in the webhook request's own trace
    assert provider_event.trace_id != call.trace_id
    assert provider_event.links == [Link(call.trace_id, call.span_id, {"otp.link": "provider_call"})]
    assert provider_event.attributes["otp.message_id"] == call.attributes["otp.message_id"]
    assert provider_event.attributes["otp.event_type"] == "email.delivered"
    assert provider_event.attributes["otp.outcome"] == "accepted"
    wait_for_status(traced, send_id, "delivered")


def test_an_event_for_an_email_that_is_not_ours_has_no_link(traced: Traced) -> None:
    unknown = event("email.delivered", unique_email())
    body, headers = signed(unknown)
    res = traced.http.post(
        RESEND_EVENTS, content=body, headers={**headers, "X-Request-ID": (hook := request_id())}
    )
    assert res.status_code < 300, res.text
    webhook = request_span(traced, hook)
    provider_event = traced.receiver.wait_for(
        lambda s: s.name == "otp.provider_event" and s.trace_id == webhook.trace_id
    )
    assert provider_event.links == []


def test_no_span_holds_an_address_a_code_or_a_send_id(traced: Traced) -> None:
    """A whole flow, every request carrying the address or the code somewhere (body, path,
    query, a webhook's recipients): nothing of them in any span the receiver got, decoded or
    raw, the resource's attributes included."""
    email = unique_email()
    rids = [request_id() for _ in range(6)]
    send_id = send(traced, email, {"X-Request-ID": rids[0]})
    sent = traced.resend.email_to(email)
    res = traced.http.post(
        VERIFY, json={"email": email, "code": sent.code}, headers={"X-Request-ID": rids[1]}
    )
    assert res.status_code == 200, res.text
    res = traced.http.get(f"{SENDS}/{send_id}", headers={"X-Request-ID": rids[2]})
    assert res.status_code == 200, res.text
    bounced = event("email.bounced", email)
    bounced["data"]["email_id"] = sent.message_id
    body, headers = signed(bounced)
    res = traced.http.post(RESEND_EVENTS, content=body, headers={**headers, "X-Request-ID": rids[3]})
    assert res.status_code < 300, res.text
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    res = traced.http.get(f"/api/v1/admin/suppressions/{email}", headers={**admin, "X-Request-ID": rids[4]})
    assert res.status_code == 200, res.text  # the bounce suppressed it
    res = traced.http.get("/api/v1/admin/deliveries", params={"email": email},
                          headers={**admin, "X-Request-ID": rids[5]})  # fmt: skip
    assert res.status_code == 200, res.text
    spans = [request_span(traced, rid) for rid in rids]
    assert [s.attributes["http.route"] for s in spans] == [
        SEND, VERIFY, f"{SENDS}/{{send_id}}", RESEND_EVENTS, "/api/v1/admin/suppressions/{email}",
        "/api/v1/admin/deliveries",
    ]  # fmt: skip
    provider_call(traced, spans[0].trace_id)
    traced.receiver.wait_for(lambda s: s.name == "otp.provider_event" and s.trace_id == spans[3].trace_id)

    secrets_sent = [email, email.partition("@")[0], sent.code, send_id]
    for span in traced.receiver.spans:
        seen = repr((span.name, span.attributes, span.links, span.resource))
        for secret in secrets_sent:
            assert secret not in seen, (secret, span)
    for body in traced.receiver.bodies:
        for secret in secrets_sent:
            assert secret.encode() not in body, secret


@dataclass
class Stores:
    kind: str
    codes: RedisCodeStore
    queue: RedisJobQueue


@pytest.fixture(params=["embedded", "redis"])
async def stores(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Stores]:
    """The send decision and the queue on the embedded in-memory Redis and on Redis: the same
    scripts, the same stream."""
    keys = RedisKeys(key_prefix)
    client = EmbeddedRedis() if request.param == "embedded" else open_redis(REDIS_URL, keys, timeout=2)
    queue = RedisJobQueue(client, keys)
    await queue.ensure_ready()
    yield Stores(request.param, RedisCodeStore(client, keys, clock=FakeClock()), queue)
    await queue.aclose()
    await client.aclose()


TRACEPARENT = f"00-{'ab' * 16}-{'cd' * 8}-01"


async def test_the_job_carries_the_trace_only_when_given(
    stores: Stores, redis: AsyncRedis, key_prefix: str
) -> None:
    """send.lua writes the stream field t from its last argument, on a new code and on a code
    emailed again (reuse) alike; without it the entry has no such field at all."""
    codes, queue = stores.codes, stores.queue
    reuse: dict[str, Any] = {"cooldown_ms": 0, "reuse": True, "reuse_min_left_ms": 30_000}
    assert (await codes.decide_send(send_req("a", **reuse), trace=TRACEPARENT)).status is SendStatus.OK
    assert (await codes.decide_send(send_req("a", **reuse), trace=TRACEPARENT)).status is SendStatus.OK
    assert (await codes.decide_send(send_req("b", **reuse))).status is SendStatus.OK
    new, again, untraced = await queue.read("c1", 10, block_ms=10)
    assert (new.trace, new.reused_code) == (TRACEPARENT, None)
    assert (again.trace, again.reused_code) == (TRACEPARENT, b"sealed")
    assert untraced.trace is None
    if stores.kind == "redis":  # the raw entries, as Redis keeps them
        entries: Any = await redis.xrange(RedisKeys(key_prefix).jobs)
        assert [TRACE in fields for _, fields in entries] == [True, True, False]


async def test_the_provider_calls_context_is_found_by_message_id(stores: Stores) -> None:
    codes = stores.codes
    traced = await codes.decide_send(
        send_req("a", send_id="send-a", status_keep_ms=60_000), trace=TRACEPARENT
    )
    plain = await codes.decide_send(send_req("b", send_id="send-b", status_keep_ms=60_000))
    assert traced.status is plain.status is SendStatus.OK
    await codes.mark_send("send-a", DeliveryStatus.SENT, message=("resend", "re-a"), trace=TRACEPARENT)
    await codes.mark_send("send-b", DeliveryStatus.SENT, message=("resend", "re-b"))
    assert await codes.message_trace("resend", "re-a") == TRACEPARENT
    assert await codes.message_trace("resend", "re-b") is None  # sent untraced
    assert await codes.message_trace("resend", "re-unknown") is None
    assert (await codes.send_status("send-a")) is not None  # the status reads as before


# A child interpreter: the service as served (uvicorn, the embedded default, its worker with the
# console provider), a send delivered, a verify, a provider event; then the OpenTelemetry modules
# loaded, against those its dependencies load on their own: FastAPI's telemetry (the API, which
# the service switches off), and redis-py's probe for the SDK's metrics (redis-py 8 imports
# opentelemetry.sdk.metrics when it is installed, whatever the variables, and records nothing
# unless its own observability is initialised, which the service never does).
_CHILD = r"""
import asyncio, contextlib, io, json, re, sys

if sys.argv[1] == "no-extra":  # as if otp-service[otel] were not installed
    sys.modules["opentelemetry.sdk"] = None

import fastapi, fastapi.telemetry._runtime, redis, uvicorn  # what the service stood on before tracing

def loaded():
    return sorted(m for m, module in sys.modules.items()
                  if module is not None and m.startswith(("opentelemetry", "google.protobuf")))

baseline = loaded()

from otp_service import tracing
from otp_service.app import create_app
from otp_service.logs import configure_logging
from otp_service.settings import Settings
from tests.support import console_emails, free_port
from tests.test_resend_webhooks import SECRET, event, signed


async def main():
    configure_logging("INFO")
    printed = io.StringIO()
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{sys.argv[2]}", secret_key="k" * 32,
                             resend_webhook_secret=SECRET))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    with contextlib.redirect_stdout(printed):  # the console provider's emails
        async with __import__("httpx").AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            res = await http.post("/api/v1/auth/otp/send", json={"email": "someone@example.org"})
            assert res.status_code == 202, res.text
            send_id = res.json()["send_id"]
            for _ in range(500):
                if (await http.get(f"/api/v1/auth/otp/sends/{send_id}")).json()["status"] == "sent":
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("never sent")
            (sent,) = console_emails(printed.getvalue())
            res = await http.post("/api/v1/auth/otp/verify", json={"email": sent.to, "code": sent.code})
            assert res.status_code == 200, res.text
            body, headers = signed(event("email.delivered", sent.to))
            res = await http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
            assert res.status_code < 300, res.text
    server.should_exit = True
    await serving
    json.dump({"baseline": baseline, "after": loaded(), "hooks": tracing.hooks is None,
               "otel_module": "otp_service.tracing.otel" in sys.modules}, sys.__stdout__)


asyncio.run(main())
"""


def run_child(mode: str, env: dict[str, str], tmp_path: Path) -> tuple[dict[str, Any], str]:
    env = {**clean_env(**env), "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(tmp_path / "otp.db")],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found, done.stderr


def test_without_otel_variables_nothing_of_opentelemetry_is_loaded(tmp_path: Path) -> None:
    found, _ = run_child("no-vars", without_otel(dict(os.environ)), tmp_path)
    assert found["after"] == found["baseline"]  # the dependencies' own imports, nothing more
    tracing_parts = (
        "opentelemetry.sdk.trace",
        "opentelemetry.exporter",
        "opentelemetry.proto",
        "google.protobuf",
    )
    assert not [m for m in found["after"] if m.startswith(tracing_parts)]
    assert found["hooks"] is True  # tracing.hooks is None
    assert found["otel_module"] is False


def test_without_the_extra_the_variables_only_warn_and_nothing_is_loaded(tmp_path: Path) -> None:
    env = {**without_otel(dict(os.environ)), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    found, stderr = run_child("no-extra", env, tmp_path)
    assert found["after"] == found["baseline"]  # FastAPI's own (the API), nothing of the SDK
    assert not [m for m in found["after"] if m.startswith("opentelemetry.sdk")]
    assert found["hooks"] is True
    assert "tracing.unavailable" in stderr
    assert "otp-service[otel]" in stderr


@pytest.mark.parametrize(
    ("variables", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "otp"}, False),  # names traces, asks for none
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ],
)
def test_the_standard_variables_decide_whether_traces_are_wanted(
    variables: dict[str, str], wanted: bool
) -> None:
    assert tracing.wanted(variables) is wanted


@pytest.mark.parametrize(
    ("variables", "named"),
    [({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
     ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_TRACES_EXPORTER"),
     ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
      "OTEL_EXPORTER_OTLP_PROTOCOL")],
)  # fmt: skip
def test_an_exporter_the_packages_cannot_serve_is_refused_at_start_up(
    variables: dict[str, str], named: str, tmp_path: Path
) -> None:
    """Refused with a message naming the variable (as the SDK's own auto-configuration refuses
    it), not run silently untraced: grpc is not what the extra installs."""
    env = {**without_otel(clean_env()), **variables}
    done = subprocess.run(
        [sys.executable, "-m", "otp_service", "serve", "--port", str(free_port())], env=env,
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"otp-service: {named}" in done.stderr, done.stderr[-2000:]
