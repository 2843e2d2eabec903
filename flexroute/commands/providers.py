"""``flexroute providers set|list|rotate``: organisations' own provider keys, sealed at rest.

``set`` reads the key from standard input (never from the command line, where it would sit in
the shell history and the process list) and seals it with ``FLEXROUTE_SECRET_KEY`` for that
organisation and provider (:mod:`flexroute.sealing`). ``rotate`` re-seals every stored key
with the current secret, opening each with the current or a previous one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from flexroute.commands._common import store_for
from flexroute.config_file import load_settings
from flexroute.errors import ConfigError
from flexroute.ledger.keys import PROVIDERS, SealedProviderKey, fingerprint
from flexroute.sealing import Sealer
from flexroute.table import render_table


async def set_(org_id: str, provider: str) -> int:
    if provider not in PROVIDERS:
        raise ConfigError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    settings = load_settings()
    sealer = Sealer.from_settings(settings)
    if sys.stdin.isatty():
        print(f"paste the {provider} API key for {org_id}, then Enter:", file=sys.stderr)
    secret = sys.stdin.readline().strip()
    if not secret:
        raise ConfigError("no provider key on standard input")
    sealed = SealedProviderKey(
        org_id,
        provider,
        sealer.seal(secret, org_id, provider),
        fingerprint(secret),
        dt.datetime.now(dt.UTC),
    )
    async with store_for(settings) as store:
        await store.set_provider_key(sealed)
    print(f"stored the {provider} key of {org_id} ({sealed.fingerprint})")
    return 0


async def list_(org_id: str, as_json: bool) -> int:
    async with store_for(load_settings()) as store:
        keys = await store.provider_keys(org_id)
    data = [
        {
            "provider": k.provider,
            "fingerprint": k.fingerprint,
            "updated_at": k.updated_at.isoformat(),
        }
        for k in keys
    ]
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(
            render_table(
                ["provider", "fingerprint", "updated_at"], [list(d.values()) for d in data]
            )
        )
    return 0


async def rotate() -> int:
    settings = load_settings()
    sealer = Sealer.from_settings(settings)
    done = 0
    async with store_for(settings) as store:
        for stored in await store.provider_keys():
            if sealer.is_current(stored.sealed):
                continue
            secret = sealer.open(stored.sealed, stored.org_id, stored.provider)
            resealed = sealer.seal(secret, stored.org_id, stored.provider)
            await store.set_provider_key(
                SealedProviderKey(
                    stored.org_id,
                    stored.provider,
                    resealed,
                    stored.fingerprint,
                    dt.datetime.now(dt.UTC),
                )
            )
            done += 1
    print(f"re-sealed {done} provider key(s) with the current FLEXROUTE_SECRET_KEY")
    return 0
