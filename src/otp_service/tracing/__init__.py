"""OpenTelemetry tracing, optional: one trace per code (issue 31; README, "Tracing (OpenTelemetry)").

With `otp-service[otel]` installed and the standard OTEL_* variables naming an exporter,
`configure()` sets `hooks` (tracing/otel.py, the only module that imports OpenTelemetry's SDK).
Otherwise `hooks` stays None, and every place that traces tests `tracing.hooks is None` first
and then does exactly what it did before tracing existed:

- app.OtpApp: the server span, outermost, built into the middleware stack only when tracing is
  on; it continues an incoming W3C `traceparent` (an internal caller's trace);
- otp/service.py: an accepted send's job carries the request's trace context (the stream field
  `t`, delivery/queue.TRACE, which otp/lua/send.lua writes only when it is given);
- delivery/worker.py: a job's task continues the trace its job carries; delivery/sender.py: each
  provider call is a span of that trace (a child of the request's span), and the context of the
  call the provider took is kept with the send's status (otp/lua/send_status.lua);
- webhooks/service.py: each provider event is a span of the webhook request's own trace, linked
  to the span of the provider call whose message id it names.

Never in a span's name or attributes: an address, a code, a send_id or any other token. A
request's path is recorded as its route's template (`/api/v1/auth/otp/sends/{send_id}`), never
as it was sent, and no query string, header or body is recorded.
"""

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from otp_service.logs import get_logger

if TYPE_CHECKING:  # never at run time: importing it imports the SDK
    from otp_service.tracing.otel import Hooks

log = get_logger("tracing")

hooks: "Hooks | None" = None
"""Set by configure() when tracing is on; None (the default) means no tracing at all."""

_configured = False


class TracingError(Exception):
    """The OTEL_* variables ask for something the installed packages cannot do (an exporter no
    package provides, an OTLP protocol other than http/protobuf or grpc): refused at start-up, as
    the SDK's own auto-configuration refuses it, rather than running with no traces."""


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces, read without importing OpenTelemetry: an
    exporter named (`OTEL_TRACES_EXPORTER`, anything but `none`) or an OTLP endpoint given
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the exporter is then
    `otlp`, as the specification's default), and the SDK not disabled (`OTEL_SDK_DISABLED`).
    `OTEL_SERVICE_NAME` and the rest only shape traces that are asked for."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(environ.get(name) for name in endpoints)


def configure() -> None:
    """Turn tracing on when the OTEL_* variables ask for it, once per process (the web app's
    factory and `otp-service worker` call it; later calls change nothing). Without the extra
    installed, a warning and no tracing; TracingError for a configuration the packages cannot
    serve."""
    global hooks, _configured
    if _configured:
        return
    _configured = True
    if not wanted():
        return
    try:
        from otp_service.tracing import otel
    except ImportError as exc:
        log.warning(
            "tracing.unavailable",
            extra={"reason": f"OTEL_* variables set, but {exc.name} is not installed: "
                   "pip install 'otp-service[otel]'"},
        )  # fmt: skip
        return
    hooks = otel.Hooks.from_environment()
    log.info("tracing.enabled", extra={"exporters": otel.exporter_names()})
