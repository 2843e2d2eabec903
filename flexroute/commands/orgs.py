"""``flexroute orgs show ORG [--json]``: balance, state, reason, card, last invoice."""

from __future__ import annotations

import json

from flexroute.commands._common import store_for
from flexroute.config_file import load_settings
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
