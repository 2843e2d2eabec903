"""``flexroute billing run | mark-paid | mark-failed``."""

from __future__ import annotations

import datetime as dt
import json
import sys

from flexroute.billing.choose import processor_for
from flexroute.billing.run import billing_run
from flexroute.billing.state import mark_failed, mark_paid
from flexroute.commands._common import parse_when, store_for
from flexroute.config_file import load_settings


async def run(at: str | None) -> int:
    settings = load_settings()
    when = dt.datetime.now(dt.UTC) if at is None else parse_when(at, "--at")
    processor = processor_for(settings)
    async with store_for(settings) as store:
        outcomes = await billing_run(
            store, processor, at=when, threshold=settings.billing_threshold_usd
        )
    print(json.dumps([outcome.to_json() for outcome in outcomes], indent=2))
    errors = [outcome for outcome in outcomes if outcome.error is not None]
    for outcome in errors:
        print(f"flexroute: billing {outcome.org_id}: {outcome.error}", file=sys.stderr)
    return 1 if errors else 0


async def paid(org_id: str) -> int:
    async with store_for(load_settings()) as store:
        org = await mark_paid(store, org_id)
    print(json.dumps(org.to_json(), indent=2))
    return 0


async def failed(org_id: str, reason: str) -> int:
    async with store_for(load_settings()) as store:
        org = await mark_failed(store, org_id, reason)
    print(json.dumps(org.to_json(), indent=2))
    return 0
