"""The tracing hooks, on OpenTelemetry's SDK: imported only by tracing.configure(), when the
OTEL_* variables ask for traces (tracing/__init__.py says where each hook is called).

Everything but the choice of exporter is the SDK's own reading of the standard variables: the
endpoint, headers, timeout, compression and certificates (OTEL_EXPORTER_OTLP_*), the sampler
(OTEL_TRACES_SAMPLER, _ARG), the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), the
batching (OTEL_BSP_*) and the propagators an incoming request is read with (OTEL_PROPAGATORS).
The exporters are the installed packages' (the `opentelemetry_traces_exporter` entry points),
named by OTEL_TRACES_EXPORTER; `otlp` speaks OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, by default
http/protobuf, the specification's default and the one the `otel` extra installs.

A job carries its trace as a W3C `traceparent` (tracestate and baggage stay with the request).
"""

import os
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, entry_points, version

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otp_service.tracing import TracingError

_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_TRACEPARENT = "traceparent"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
"""HTTP methods a span names; any other is `_OTHER` (OpenTelemetry's HTTP conventions)."""
_W3C = TraceContextTextMapPropagator()


def exporter_names() -> list[str]:
    """OTEL_TRACES_EXPORTER's names as entry points (`otlp` by default, when only an endpoint is
    set), `otlp` resolved to its protocol's exporter."""
    names = [n.strip() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    resolved = []
    for name in names:
        if name == "otlp":
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol not in _OTLP_BY_PROTOCOL:
                raise TracingError(
                    "OTEL_EXPORTER_OTLP_PROTOCOL: the OTLP exporter speaks http/protobuf or grpc"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        resolved.append(name)
    return resolved


def _exporters() -> list[SpanExporter]:
    exporters = []
    for name in exporter_names():
        found = entry_points(group=_EXPORTER_GROUP, name=name)
        if not found:
            raise TracingError(
                f"OTEL_TRACES_EXPORTER: no installed package provides the trace exporter {name!r} "
                "(otp-service[otel] installs otlp over http/protobuf, and console)"
            )
        exporters.append(next(iter(found)).load()())
    return exporters


def _version() -> str | None:
    try:
        return version("otp-service")
    except PackageNotFoundError:
        return None


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; the service's own
    name and version where they name none."""
    resource = Resource.create()
    own: dict[str, str] = {}
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        own[SERVICE_NAME] = "otp-service"
    if SERVICE_VERSION not in resource.attributes and (own_version := _version()) is not None:
        own[SERVICE_VERSION] = own_version
    return resource.merge(Resource(own)) if own else resource


def _traceparent(span_context: SpanContext) -> str | None:
    if not span_context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    return carrier.get(_TRACEPARENT)


def _remote(carried: str) -> SpanContext:
    """The span a carried `traceparent` names (invalid when it is malformed)."""
    return trace.get_current_span(_W3C.extract({_TRACEPARENT: carried})).get_span_context()


def _failed(span: Span, exc: BaseException) -> None:
    """An exception's type only: its message may quote what a provider or a caller sent."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(StatusCode.ERROR)


class ServerSpans:
    """The server span of each HTTP request, outermost (app.OtpApp), so a 500 that Starlette's
    error middleware answers is in it too. It continues the caller's trace (the global
    propagators: W3C trace context and baggage, or OTEL_PROPAGATORS). Recorded: the method, the
    route's template, the status and the request id (X-Request-ID, the logs' key); never the
    path as sent, its query, a header or the body."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self._tracer = tracer
        self._fields = frozenset(f.lower().encode("latin-1") for f in propagate.get_global_textmap().fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in self._fields}
        parent = propagate.extract(carrier)
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        name = "HTTP" if method == "_OTHER" else method
        span = self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        )  # fmt: skip
        status: int | None = None

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":  # api/context.py adds it to every response
                        span.set_attribute("otp.request_id", value.decode("latin-1"))
            await send(message)

        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            context.detach(token)
            route = getattr(scope.get("route"), "path", None)  # the matched route (FastAPI sets it)
            if isinstance(route, str):
                span.set_attribute("http.route", route)
                span.update_name(f"{name} {route}")
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(StatusCode.ERROR)
            span.end()


class EventSpan:
    """One provider event's span (webhooks/service.py)."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def matched(self, message_id: str, carried: str | None) -> None:
        """The event names `message_id`; `carried`: the context of the provider call that sent
        that email (kept with the send's status), linked when it is known."""
        self._span.set_attribute("otp.message_id", message_id)
        if carried is not None and (call := _remote(carried)).is_valid:
            self._span.add_link(call, {"otp.link": "provider_call"})

    def outcome(self, outcome: str) -> None:
        self._span.set_attribute("otp.outcome", outcome)


class Hooks:
    """What the service calls when tracing is on (tracing/__init__.py lists where)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("otp_service", _version())

    @classmethod
    def from_environment(cls) -> "Hooks":
        # The sampler is the SDK's reading of OTEL_TRACES_SAMPLER; spans left in the batch are
        # exported at exit (shutdown_on_exit).
        provider = TracerProvider(resource=_resource())
        for exporter in _exporters():
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def server(self, app: ASGIApp) -> ASGIApp:
        return ServerSpans(app, self._tracer)

    def carried(self) -> str | None:
        """The current span's context as a `traceparent`, for the job a send queues."""
        return _traceparent(trace.get_current_span().get_span_context())

    def resume(self, carried: str | None) -> None:
        """The calling task continues the trace a job carries. Never detached: a job's task is
        its own (delivery/worker.py), and its context ends with it."""
        if carried is not None:
            context.attach(_W3C.extract({_TRACEPARENT: carried}))

    async def provider_call(
        self, provider: str, attempt: int, call: Awaitable[str]
    ) -> tuple[str, str | None]:
        """One provider call as a client span of the current trace: the provider's message id,
        and the span's context (kept with the send's status, for the provider's events)."""
        attributes: dict[str, str | int] = {"otp.provider": provider, "otp.attempt": attempt}
        with self._tracer.start_as_current_span(
            "otp.provider_call", kind=SpanKind.CLIENT, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                message_id = await call
            except BaseException as exc:
                _failed(span, exc)
                raise
            span.set_attribute("otp.message_id", message_id)
            return message_id, _traceparent(span.get_span_context())

    @contextmanager
    def provider_event(self, provider: str, event_type: str) -> Iterator[EventSpan]:
        """One provider event (a webhook's), a span of the webhook request's trace."""
        with self._tracer.start_as_current_span(
            "otp.provider_event", attributes={"otp.provider": provider, "otp.event_type": event_type},
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                yield EventSpan(span)
            except BaseException as exc:
                _failed(span, exc)
                raise
