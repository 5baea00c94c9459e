"""Prometheus metrics. Names follow the Prometheus naming guide (`_total` counters, base units)."""

from prometheus_client import Counter, Gauge, Histogram

# `app`: the application (CONTRACT §8), one of OTP_APPS' ids or '' (the service-wide one, which
# Prometheus reads as no label): never a value taken from a request, so the series stay bounded.
REQUESTS = Counter("otp_requests_total", "Accepted OTP API requests by endpoint", ["endpoint", "app"])
REJECTIONS = Counter("otp_rejections_total", "Requests answered with a problem, by code", ["code", "app"])
DELIVERIES = Counter(
    "otp_deliveries_total", "Delivery jobs by outcome and provider", ["outcome", "provider", "app"]
)
PROVIDER_CALLS = Counter("otp_provider_calls_total", "Email provider calls by result", ["provider", "result"])
PROVIDER_LATENCY = Histogram(
    "otp_provider_call_seconds",
    "Email provider call latency",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_EVENTS = Counter(
    "otp_webhook_events_total",
    "Webhook events by provider, type and outcome",
    ["provider", "type", "outcome"],
)
EVENTS_OUT = Counter(
    "otp_events_out_total",
    "Events out (OTP_EVENTS_WEBHOOK_URL) by type and result: queued, delivered (a 2xx), "
    "retry_scheduled, expired (24 h without a 2xx), lost (Redis down when published), dropped (its "
    "application no longer has a receiver)",
    ["type", "result"],
)
WORKER_CRASHES = Counter(
    "otp_worker_crashes_total",
    "Unexpected exceptions in the delivery worker while handling a job (where=job)",
    ["where"],
)
LOOP_RESTARTS = Counter(
    "otp_loop_restarts_total", "Background loops started again after an unexpected exception", ["loop"]
)
LOOP_LAST_SUCCESS = Gauge(
    "otp_loop_last_success_timestamp_seconds", "When each background loop last completed a pass", ["loop"]
)
DELIVERABILITY_CHECKS = Counter(
    "otp_deliverability_checks_total", "Deliverability lookups (DNS) by verdict", ["verdict"]
)
CAPTCHA_CHECKS = Counter("otp_captcha_checks_total", "Captcha siteverify calls by result", ["result"])
NOT_ME = Counter(
    "otp_not_me_total",
    '"Didn\'t ask for this?" (CONTRACT §4) by event: reported (a report accepted), invalid_token (a bad, '
    "expired or reused token), withheld (a send accepted and emailed nothing because of a report)",
    ["event"],
)
SERVER_ERRORS = Counter("otp_http_server_errors_total", "Responses with a 5xx status, by status", ["status"])
RETENTION_DELETED = Counter(
    "otp_retention_deleted_total", "Rows deleted for being older than OTP_RETENTION_DAYS, by table", ["table"]
)
SENDER_CHECK = Gauge(
    "otp_sender_check",
    "Sender check (CONTRACT §9, otp-service doctor) by check and application (its From domain's): 1 "
    "passing for every provider, 0 failing",
    ["check", "app"],
)

# Time to inbox (issue 31), labelled by provider name only (a handful of values), so the series
# stay bounded. Buckets span the queue's normal second or two to the 5-minute code lifetime
# (OTP_CODE_TTL's default), the longest any stage can matter.
_TIME_TO_INBOX_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300)
ACCEPTED_TO_SENT = Histogram(
    "otp_accepted_to_sent_seconds",
    "From a send accepted (its job queued) to its email handed to the provider, by provider",
    ["provider"],
    buckets=_TIME_TO_INBOX_BUCKETS,
)
SENT_TO_DELIVERED = Histogram(
    "otp_sent_to_delivered_seconds",
    "From an email handed to the provider to the provider's delivered event, by provider",
    ["provider"],
    buckets=_TIME_TO_INBOX_BUCKETS,
)
SENT_TO_VERIFIED = Histogram(
    "otp_sent_to_verified_seconds",
    "From a code's latest email handed to a provider to the code verified",
    buckets=(*_TIME_TO_INBOX_BUCKETS, 600, 900),
)
