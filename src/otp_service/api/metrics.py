"""`GET /metrics` in the Prometheus text format.

With several web processes (`otp-service serve --workers N`), the CLI points
PROMETHEUS_MULTIPROC_DIR at a shared directory and each scrape aggregates every process.
Queue depth, oldest job age, quota usage and the workers alive are read from the shared stores
at scrape time, so any web process reports the whole service.
"""

import os
from collections.abc import Sequence

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from otp_service.api.deps import UsageServiceDep, require_metrics_access
from otp_service.api.schemas import problem_responses
from otp_service.errors import ServiceError

router = APIRouter(tags=["operations"])


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def _gauge(name: str, help_text: str, samples: Sequence[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]
    return "\n".join(lines) + "\n"


@router.get(
    "/metrics",
    summary="Prometheus metrics (OTP_METRICS_TOKEN as a bearer token, or a loopback caller)",
    response_class=Response,
    dependencies=[Depends(require_metrics_access)],
    responses=problem_responses({401: ["unauthorized"]}),
)
async def metrics(usage: UsageServiceDep) -> Response:
    body = generate_latest(_registry()).decode()
    try:
        live = await usage.live()
    except ServiceError:
        body += _gauge("otp_store_up", "Whether the limit store answered this scrape", [("", 0)])
    else:
        body += _gauge("otp_store_up", "Whether the limit store answered this scrape", [("", 1)])
        states = [('{state="waiting"}', live.queue.waiting), ('{state="pending"}', live.queue.pending)]
        body += _gauge("otp_queue_jobs", "Delivery jobs by state", states)
        body += _gauge("otp_queue_oldest_job_age_seconds", "Age of the oldest unacknowledged job",
                       [("", live.queue.oldest_age_ms / 1000)])  # fmt: skip
        body += _gauge(
            "otp_workers_alive", "Delivery workers whose heartbeat is current", [("", live.workers_alive)]
        )
        body += _gauge("otp_global_sends_24h", "Accepted sends in the rolling 24 h",
                       [(f'{{channel="{c}"}}', n) for c, n in live.sent_24h.items()])  # fmt: skip
        body += _gauge("otp_global_limit_24h", "Service-wide cap per rolling 24 h",
                       [(f'{{channel="{c}"}}', n) for c, n in live.limits.items()])  # fmt: skip
        body += _gauge("otp_provider_paused", "1 while the reputation guard has paused the provider",
                       [(f'{{provider="{p}"}}', int(v)) for p, v in live.paused.items()])  # fmt: skip
    return Response(body, media_type=CONTENT_TYPE_LATEST)
