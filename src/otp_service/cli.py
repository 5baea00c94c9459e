"""`otp-service serve | migrate | worker | doctor | trust-page`."""

import argparse
import asyncio
import ipaddress
import os
import sys
import tempfile

from otp_service.settings import Settings, SettingsError, load_database_settings, load_settings


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"otp-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve anywhere


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings_or_exit()
    if args.workers > 1 and settings.redis_url is None:
        print(
            "otp-service: --workers > 1 needs OTP_REDIS_URL: without Redis, limits and the "
            "delivery queue live in one process and several workers would each enforce their own.",
            file=sys.stderr,
        )
        return 2
    if args.uds is not None and not settings.trusted_proxies:
        print(
            "otp-service: --uds needs OTP_TRUSTED_PROXIES: a unix socket's peer has no IP address, so "
            "without the local proxy's X-Forwarded-For every user would be one client, sharing one "
            "rate. Set OTP_TRUSTED_PROXIES (e.g. '[\"127.0.0.1/32\"]') to the address the proxy reports.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker process counts into files here; /metrics aggregates all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="otp-metrics-")
    console_by_default = (
        settings.email_provider == "console" and "email_provider" not in settings.model_fields_set
    )
    if (refused := settings.console_refused) is not None:
        print(f"otp-service: refusing to serve: {refused}", file=sys.stderr)
        return 2
    # Behind a unix socket is a local proxy, which may well be public.
    if console_by_default and (args.uds is not None or not _is_loopback(args.host)):
        print(
            f"otp-service: refusing to serve on {args.uds or args.host} with the console email "
            "provider, which prints every code on stdout. Set OTP_EMAIL_PROVIDER=resend, ses or smtp "
            "(with their settings), or OTP_EMAIL_PROVIDER=console explicitly to accept that.",
            file=sys.stderr,
        )
        return 2
    if settings.is_embedded:
        print(
            "otp-service: embedded default (SQLite ./otp_service.db, in-process limits, "
            "console email provider): codes are printed on stdout.",
            file=sys.stderr,
        )
    uvicorn.run(
        "otp_service.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        uds=args.uds,
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the service decides which X-Forwarded-For to believe itself
        timeout_graceful_shutdown=10,
    )
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from otp_service.db.migrate import upgrade

    try:
        database = load_database_settings()  # the database URL alone: no secret needed to migrate
    except SettingsError as exc:
        print(f"otp-service: {exc}", file=sys.stderr)
        return 2
    asyncio.run(upgrade(database.database_url))
    print("otp-service: database is at the latest migration", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from otp_service.logs import configure_logging

    settings = _settings_or_exit()
    configure_logging(settings.log_level)
    if (refused := settings.console_refused) is not None:
        print(f"otp-service: refusing to start the worker: {refused}", file=sys.stderr)
        return 2
    if settings.redis_url is None:
        print(
            "otp-service: the worker needs OTP_REDIS_URL: without Redis the delivery queue lives in "
            "the web process, which runs its own worker (OTP_WORKER_ENABLED).",
            file=sys.stderr,
        )
        return 2
    from otp_service import tracing

    try:
        tracing.configure()  # the OTEL_* variables, as the web processes read them (app.create_app)
    except tracing.TracingError as exc:
        print(f"otp-service: {exc}", file=sys.stderr)
        return 2
    import uvloop  # uvicorn[standard]'s loop, which the web processes run on too

    uvloop.run(run_worker(settings, concurrency=args.concurrency))
    return 0


async def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    """The delivery worker and the reputation guard, no HTTP server, until SIGTERM or SIGINT."""
    import signal

    from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
    from otp_service.logs import get_logger

    log = get_logger("worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        open_infrastructure(settings) as infra,
        running_worker(infra, WorkerOptions(concurrency=concurrency)) as built,
    ):
        extra = {"consumer": built.worker.name, "concurrency": concurrency or settings.worker_concurrency}
        log.info("worker.started", extra=extra)
        await stop.wait()
        log.info("worker.stopping", extra={"consumer": built.worker.name})


def _app_or_exit(settings: Settings, app: str | None) -> Settings:
    """The settings application `app` sees (CONTRACT §8), the service-wide ones without --app; an
    id OTP_APPS does not configure: exit 2, naming those it does."""
    view = settings if app is None else settings.app_view(app) if app else None
    if view is None:
        known = ", ".join(settings.app_ids) or "none (OTP_APPS is empty)"
        print(f"otp-service: --app {app!r}: no such application; configured: {known}", file=sys.stderr)
        raise SystemExit(2)
    return view


def _doctor(args: argparse.Namespace) -> int:
    return asyncio.run(run_doctor(_app_or_exit(_settings_or_exit(), args.app)))


async def run_doctor(settings: Settings) -> int:
    """The sender check (CONTRACT §9) for `settings`' email_from (OTP_EMAIL_FROM, or an
    application's own) and each configured provider, printed; 1 when a check fails."""
    import contextlib

    from otp_service.assembly.infrastructure import provider_names
    from otp_service.assembly.providers import build_provider
    from otp_service.sender.dns import DnsReader
    from otp_service.sender.doctor import check_sender, render

    async with contextlib.AsyncExitStack() as stack:
        providers = [await build_provider(name, settings, stack) for name in provider_names(settings)]
        report = await check_sender(settings.email_from, providers, DnsReader.of(settings))
    sys.stdout.write((f"Application {settings.app}\n" if settings.app else "") + render(report))
    return 1 if report.failed else 0


def _trust_page(args: argparse.Namespace) -> int:
    from otp_service.trust.page import render_trust_page

    sys.stdout.write(render_trust_page(_app_or_exit(_settings_or_exit(), args.app), args.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otp-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--uds", metavar="PATH", default=None,
        help="listen on a unix socket instead of --host/--port (behind a local proxy; with "
        "OTP_TRUSTED_PROXIES set, its X-Forwarded-For is believed)",
    )  # fmt: skip
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="apply the database migrations (idempotent)")
    migrate.set_defaults(func=_migrate)
    worker = sub.add_parser(
        "worker", help="run the delivery worker (queue consumer, reputation guard), no HTTP"
    )
    worker.add_argument(
        "--concurrency", type=int, default=None, help="jobs handled at once (OTP_WORKER_CONCURRENCY)"
    )
    worker.set_defaults(func=_worker)
    doctor = sub.add_parser(
        "doctor",
        help="check that mail from OTP_EMAIL_FROM will be accepted (SPF, DKIM, DMARC); exit 1 on a failure",
    )
    doctor.add_argument(
        "--app", metavar="ID", default=None, help="check that application's sender instead (OTP_APPS)"
    )
    doctor.set_defaults(func=_doctor)
    trust = sub.add_parser(
        "trust-page", help='print the "Trust & email sending practices" page, from the effective settings'
    )
    trust.add_argument("--format", choices=["markdown", "html"], default="markdown")
    trust.add_argument(
        "--app", metavar="ID", default=None, help="that application's page, from its settings (OTP_APPS)"
    )
    trust.set_defaults(func=_trust_page)
    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    if getattr(args, "concurrency", None) is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
