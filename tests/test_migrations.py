import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.db.engine import create_engine
from otp_service.db.migrate import upgrade
from otp_service.db.models import Base
from tests.conftest import TEST_SECRET, create_database, drop_database, pg_url

INSERT = "INSERT INTO suppressions (email, reason, source) VALUES ('{email}', '{reason}', 't')"
EXPECTED_TABLES = {"suppressions", "webhook_events", "deliveries", "audit_log", "alembic_version"}


async def _state(engine: AsyncEngine) -> tuple[set[str], list[str]]:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        versions = list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    return tables, versions


async def _check_upgrade_twice(url: str) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        first = await _state(engine)
        await upgrade(url)
        second = await _state(engine)
    finally:
        await engine.dispose()
    assert first[0] >= EXPECTED_TABLES
    assert len(first[1]) == 1
    assert first == second
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == [], f"the migrations and the models disagree: {diff}"


async def test_migrations_apply_on_postgresql_and_are_idempotent() -> None:
    name = f"otp_test_mig_{secrets.token_hex(4)}"
    await create_database(name)
    try:
        await _check_upgrade_twice(pg_url(name))
    finally:
        await drop_database(name)


async def test_migrations_apply_on_sqlite_and_are_idempotent(tmp_path: Path) -> None:
    await _check_upgrade_twice(f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}")


async def test_suppression_email_must_be_lower_case_and_unique(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(INSERT.format(email="a@x.test", reason="manual")))
        for sql in (
            INSERT.format(email="B@x.test", reason="manual"),
            INSERT.format(email="a@x.test", reason="manual"),
            INSERT.format(email="c@x.test", reason="whim"),
        ):
            with pytest.raises(IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(text(sql))
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM suppressions WHERE email = 'a@x.test'"))
    finally:
        await engine.dispose()


async def test_cli_migrate_is_idempotent() -> None:
    name = f"otp_test_cli_{secrets.token_hex(4)}"
    await create_database(name)
    env = {**os.environ, "OTP_DATABASE_URL": pg_url(name), "OTP_SECRET_KEY": TEST_SECRET}
    try:
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-m", "otp_service", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            assert "latest migration" in proc.stderr
    finally:
        await drop_database(name)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_suppressions_stop_matching_other_spellings_after_0007(backend: str, tmp_path: Path) -> None:
    """A row written under 0005's rule carried the mailbox key beside the address its event
    named; 0007 drops the key, and the row goes on naming (and suppressing) that address only."""
    from alembic import command

    from otp_service.db.migrate import alembic_config
    from otp_service.suppression.repository import suppressed_among

    name = f"otp_test_0007_{secrets.token_hex(4)}"
    url = pg_url(name) if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    if backend == "postgresql":
        await create_database(name)
    engine = create_engine(url)
    try:

        def to(revision: str) -> Any:
            def run(connection: Any) -> None:
                cfg = alembic_config()
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)

            return run

        async with engine.begin() as conn:
            await conn.run_sync(to("0006"))
            await conn.execute(text("INSERT INTO suppressions (email, mailbox, reason, source) "
                                    "VALUES ('victim+zz@yahoo.com', 'victim@yahoo.com', 'bounce', 'ses')"))  # fmt: skip
        async with engine.begin() as conn:
            await conn.run_sync(to("head"))
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("suppressions")}
            )
            found = await suppressed_among(conn, ["victim+zz@yahoo.com", "victim@yahoo.com"])
        assert "mailbox" not in columns
        assert found == {"victim+zz@yahoo.com": False}
    finally:
        await engine.dispose()
        if backend == "postgresql":
            await drop_database(name)
