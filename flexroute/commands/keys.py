"""``flexroute keys create|list|revoke``: flexroute keys for organisations (gateway mode).

A key is printed once, at creation; the store keeps only its SHA-256. The first key created
switches every proxy started afterwards into gateway mode.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from flexroute.commands._common import store_for
from flexroute.config_file import load_settings
from flexroute.errors import ConfigError
from flexroute.ledger.keys import TIERS, ApiKey, hash_key, new_key
from flexroute.table import render_table


async def create(org_id: str, tier: str) -> int:
    if tier not in TIERS:
        raise ConfigError(f"--tier {tier!r} is not one of {', '.join(TIERS)}")
    if not org_id.strip():
        raise ConfigError("--org must name an organisation")
    key_id, key = new_key()
    record = ApiKey(key_id, org_id, tier, False, dt.datetime.now(dt.UTC))
    settings = load_settings()
    async with store_for(settings) as store:
        new_org = not await store.keys(org_id)
        await store.create_key(record, hash_key(key))
        if new_org and settings.free_credit_usd > 0:  # FLEXROUTE_FREE_CREDIT_USD, once per org
            await store.grant_credit(org_id, settings.free_credit_usd)
    print(key)
    print(
        f"key {key_id} for {org_id} ({tier}); shown once, store it now. "
        "Proxies started from now on run in gateway mode.",
        file=sys.stderr,
    )
    return 0


async def list_(org_id: str | None, as_json: bool) -> int:
    async with store_for(load_settings()) as store:
        keys = await store.keys(org_id)
    if as_json:
        print(json.dumps([key.to_json() for key in keys], indent=2))
        return 0
    rows = [
        [k.key_id, k.org_id, k.tier, "revoked" if k.revoked else "active", k.created_at.isoformat()]
        for k in keys
    ]
    print(render_table(["key_id", "org", "tier", "state", "created_at"], rows))
    return 0


async def revoke(key_id: str) -> int:
    async with store_for(load_settings()) as store:
        done = await store.revoke_key(key_id)
    if not done:
        print(f"flexroute: no key {key_id}", file=sys.stderr)
        return 1
    print(f"revoked {key_id} (proxies stop accepting it within their key cache time, 5 s)")
    return 0
