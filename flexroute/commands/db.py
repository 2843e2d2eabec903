"""``flexroute db upgrade``: apply pending schema migrations to FLEXROUTE_DATABASE_URL."""

from __future__ import annotations

from flexroute.commands._common import store_for
from flexroute.config_file import load_settings


async def upgrade() -> int:
    settings = load_settings()
    async with store_for(settings) as store:
        version = await store.upgrade()
    print(f"ledger schema at version {version} ({settings.database_url})")
    return 0
