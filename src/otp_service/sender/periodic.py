"""The worker's sender check (CONTRACT §9): at start, then every 6 h, each check's verdict for
each application's From domain as `otp_sender_check{check,app}` (1 passing, 0 failing), which the
OtpSenderCheckFailing alert watches (deploy/prometheus/alerts.yml), and a `sender.check_failing`
log line per failure naming the record to publish.

Each distinct From domain is checked once, however many applications send from it (they would
get the same answers); every application sending from it gets its verdict, so the alert names an
application an operator can run `otp-service doctor --app` for. The `app` label only takes
configured ids ('' the service-wide application), so the series stay bounded."""

from collections.abc import Mapping, Sequence

from otp_service.background import Background
from otp_service.clock import Clock
from otp_service.logs import get_logger
from otp_service.metrics import SENDER_CHECK
from otp_service.sender.dns import DnsReader
from otp_service.sender.doctor import Report, check_sender, from_domain
from otp_service.sender.identity import Named
from otp_service.supervise import Loop

log = get_logger("sender")

RUN_EVERY = 6 * 3600.0
"""Seconds between checks (CONTRACT §9)."""
RETRY_FAILED = 1800.0
"""Seconds before a failing check is looked at again: the alert clears within half an hour of a
fix, or of the end of a DNS outage, instead of six hours."""
CHECK_EVERY = 60.0
"""Seconds between the loop's wake-ups: each is a heartbeat (OtpLoopStalled expects one within
5 minutes), and a check runs when due."""


class SenderCheck(Background):
    def __init__(
        self,
        *,
        senders: Mapping[str, str],
        providers: Sequence[Named],
        dns: DnsReader,
        clock: Clock,
        check_every: float = CHECK_EVERY,
        run_every: float = RUN_EVERY,
        retry_failed: float = RETRY_FAILED,
    ) -> None:
        # From domain -> (a sender using it, the applications sending from it).
        self._domains: dict[str, tuple[str, list[str]]] = {}
        for app, sender in senders.items():
            self._domains.setdefault(from_domain(sender), (sender, []))[1].append(app)
        self._providers = tuple(providers)
        self._dns = dns
        self._clock = clock
        self._check_every = check_every
        self._run_every = run_every
        self._retry_failed = retry_failed
        self._due = float("-inf")  # at start
        super().__init__()

    def loops(self) -> dict[str, Loop]:
        return {"sender_check": self.every(self._check_every, self.run_if_due, failed="sender.unavailable")}

    async def run_if_due(self) -> dict[str, Report] | None:
        if self._clock() < self._due:
            return None
        return await self.run_once()

    async def run_once(self) -> dict[str, Report]:
        """Each From domain's report, by domain."""
        reports: dict[str, Report] = {}
        for domain, (sender, apps) in self._domains.items():
            reports[domain] = report = await check_sender(sender, self._providers, self._dns)
            for check, passed in report.by_check().items():
                for app in apps:
                    SENDER_CHECK.labels(check=check, app=app).set(1 if passed else 0)
            named = {"domain": domain, "apps": apps}
            for r in report.failed:
                log.warning(
                    "sender.check_failing",
                    extra={
                        "check": r.check,
                        "provider": r.provider,
                        "detail": r.detail,
                        "publish": list(r.publish),
                        **named,
                    },
                )
            if not report.failed:
                log.info("sender.checks_passed", extra=named)
        failed = any(r.failed for r in reports.values())
        self._due = self._clock() + (self._retry_failed if failed else self._run_every)
        return reports
