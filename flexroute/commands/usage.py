"""``flexroute usage [--org ORG] [--since DATE] [--json]``: totals by day, model, route."""

from __future__ import annotations

import json

from flexroute.commands._common import parse_when, store_for
from flexroute.config_file import load_settings
from flexroute.ledger import UsageRow
from flexroute.table import render_table


def usage_json(rows: list[UsageRow]) -> dict[str, object]:
    """The shape of ``flexroute usage --json`` and ``GET /flexroute/v1/usage``."""
    return {"data": [row.to_json() for row in rows]}


async def show(org_id: str | None, since: str | None, as_json: bool) -> int:
    start = None if since is None else parse_when(since, "--since")
    async with store_for(load_settings()) as store:
        rows = await store.usage(org_id, start)
    if as_json:
        print(json.dumps(usage_json(rows), indent=2))
        return 0
    headers = ["day", "model", "route", "requests", "spend_usd", "saving_usd", "fee_usd"]
    cells = [
        [
            r.day,
            r.model or "-",
            r.route,
            str(r.requests),
            f"{r.cost:.6f}",
            f"{r.saving:.6f}",
            f"{r.fee:.9f}",
        ]
        for r in rows
    ]
    print(render_table(headers, cells, align="lllrrrr"))
    return 0
