"""`otp-service serve | migrate | worker`."""

import argparse
import asyncio
import os
import sys
import tempfile

from otp_service.settings import Settings, SettingsError, load_settings


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"otp-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


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
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker process counts into files here; /metrics aggregates all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="otp-metrics-")
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
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the service decides which X-Forwarded-For to believe itself
        timeout_graceful_shutdown=10,
    )
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from otp_service.db.migrate import upgrade

    settings = _settings_or_exit()
    asyncio.run(upgrade(settings.database_url))
    print("otp-service: database is at the latest migration", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otp-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="apply the database migrations (idempotent)")
    migrate.set_defaults(func=_migrate)
    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
