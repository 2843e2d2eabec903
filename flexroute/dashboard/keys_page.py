"""The Keys page: the organisation's keys with their month and caps; create a key (shown
once, in the answer to the POST, never in a URL), revoke one, set a key's or the
organisation's monthly caps."""

from __future__ import annotations

import datetime as dt

from flexroute.dashboard.app import Page
from flexroute.dashboard.http import Request, Response
from flexroute.dashboard.pages import org_of
from flexroute.dashboard.queries import key_rows
from flexroute.dashboard.sessions import Signed
from flexroute.errors import ConfigError
from flexroute.ledger.keys import ApiKey, hash_key, new_key
from flexroute.ledger.quota import Caps
from flexroute.money import parse_usd


async def keys_page(page: Page, request: Request, signed: Signed, **notes: str | None) -> Response:
    org_id = org_of(signed)
    rows = await key_rows(page.store, org_id, page.clock())
    org_caps, _ = await page.store.caps(org_id, None)
    return page.render(
        "keys.html",
        signed=signed,
        org_id=org_id,
        rows=rows,
        org_caps=org_caps,
        new_key=notes.get("new_key"),
        new_key_id=notes.get("new_key_id"),
        notice=notes.get("notice"),
        error=notes.get("error"),
        tab="keys",
    )


async def create_key(page: Page, request: Request, signed: Signed) -> Response:
    """A new key of the organisation, at the tier of the key this session signed in with."""
    org_id = org_of(signed)
    keys = {k.key_id: k for k in await page.store.keys(org_id)}
    tier = keys[signed.session.key_id or ""].tier if signed.session.key_id in keys else "free"
    key_id, key = new_key()
    await page.store.create_key(
        ApiKey(key_id, org_id, tier, False, dt.datetime.now(dt.UTC)), hash_key(key)
    )
    return await keys_page(page, request, signed, new_key=key, new_key_id=key_id)


async def revoke_key(page: Page, request: Request, signed: Signed) -> Response:
    org_id = org_of(signed)
    key_id = request.field("key_id")
    if key_id not in {k.key_id for k in await page.store.keys(org_id)}:
        return await keys_page(page, request, signed, error=f"No key {key_id!r} in {org_id}.")
    await page.store.revoke_key(key_id)
    page.forget_key(key_id)  # this process refuses it at once; other replicas within 5 s
    note = f"Revoked {key_id}; requests with it now get 401."
    if key_id == signed.session.key_id:
        note += " It was the key you signed in with: this session ends with it."
    return await keys_page(page, request, signed, notice=note)


async def set_caps(page: Page, request: Request, signed: Signed) -> Response:
    """Monthly caps on fees and on provider spend, of one key or (no key_id) the org."""
    org_id = org_of(signed)
    key_id = request.field("key_id") or None
    if key_id is not None and key_id not in {k.key_id for k in await page.store.keys(org_id)}:
        return await keys_page(page, request, signed, error=f"No key {key_id!r} in {org_id}.")
    try:
        caps = Caps(
            parse_usd(request.field("fee_cap"), "fee cap"),
            parse_usd(request.field("spend_cap"), "spend cap"),
        )
    except ConfigError as error:
        return await keys_page(page, request, signed, error=str(error))
    await page.store.set_caps(org_id, key_id, caps)
    scope = f"key {key_id}" if key_id else f"organisation {org_id}"
    return await keys_page(
        page, request, signed, notice=f"Caps of {scope} saved; proxies apply them within 2 s."
    )
