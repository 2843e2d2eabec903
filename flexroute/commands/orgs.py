"""``flexroute orgs show ORG [--json]``: balance, state, reason, card, credit, last invoice;
``flexroute orgs caps ORG [--key KEY] [--fee-cap USD] [--spend-cap USD]``: monthly caps."""

from __future__ import annotations

import datetime as dt
import json

from flexroute.commands._common import store_for
from flexroute.config_file import load_settings
from flexroute.errors import ConfigError
from flexroute.ledger.quota import Caps, month_start, next_month
from flexroute.money import format_usd, parse_usd
from flexroute.table import render_table


async def show(org_id: str, as_json: bool) -> int:
    async with store_for(load_settings()) as store:
        org = await store.org(org_id)
    data = org.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    last = data.pop("last_invoice")
    rows = [[key, "" if value is None else str(value)] for key, value in data.items()]
    if last is not None:
        rows.append(["last_invoice", f"{last['period']} {last['amount_usd']} {last['status']}"])
    print(render_table(["field", "value"], rows))
    return 0


async def caps(org_id: str, key_id: str | None, fee_cap: str | None, spend_cap: str | None) -> int:
    """Set the caps given (the others stay as they are), then print the scope's caps and
    its month so far. Proxies apply a change within their cap cache time (2 s)."""
    fee, spend = parse_usd(fee_cap, "--fee-cap"), parse_usd(spend_cap, "--spend-cap")
    async with store_for(load_settings()) as store:
        if key_id is not None and key_id not in {k.key_id for k in await store.keys(org_id)}:
            raise ConfigError(
                f"--key {key_id!r} is not a key of {org_id}: see `flexroute keys list`"
            )
        org_caps, key_caps = await store.caps(org_id, key_id)
        current = key_caps if key_id is not None else org_caps
        if fee_cap is not None or spend_cap is not None:
            current = Caps(
                current.fee_cap if fee_cap is None else fee,
                current.spend_cap if spend_cap is None else spend,
            )
            await store.set_caps(org_id, key_id, current)
        now = dt.datetime.now(dt.UTC)
        org_month, key_month = await store.month_totals(org_id, key_id, month_start(now))
    month = key_month if key_id is not None else org_month
    data = {
        "org_id": org_id,
        "key_id": key_id,
        "fee_cap_usd": None if current.fee_cap is None else format_usd(current.fee_cap),
        "spend_cap_usd": None if current.spend_cap is None else format_usd(current.spend_cap),
        "fees_month_usd": format_usd(month.fees),
        "spend_month_usd": format_usd(month.spend),
        "resets_at": next_month(now).isoformat(),
    }
    print(json.dumps(data, indent=2))
    return 0
