"""Run the Alembic migrations programmatically (CLI `migrate` and the embedded start-up)."""

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.db.engine import create_engine


def migrations_path() -> Path:
    packaged = Path(str(resources.files("otp_service") / "migrations"))
    if (packaged / "env.py").is_file():
        return packaged
    # Source checkout / editable install: the top-level migrations/ folder.
    return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade_engine(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def upgrade(url: str) -> None:
    engine = create_engine(url, timeout=10)
    try:
        await upgrade_engine(engine)
    finally:
        await engine.dispose()
