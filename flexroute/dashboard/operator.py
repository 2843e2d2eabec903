"""The operator's page (signed in with ``FLEXROUTE_ADMIN_KEY``): every organisation with its
state, balance, credit and caps; mark an organisation's unsettled invoices paid."""

from __future__ import annotations

from flexroute.billing.state import mark_paid
from flexroute.dashboard.app import Page
from flexroute.dashboard.http import Request, Response
from flexroute.dashboard.queries import every_org
from flexroute.dashboard.sessions import Signed


async def operator_page(
    page: Page, request: Request, signed: Signed, notice: str | None = None
) -> Response:
    rows = await every_org(page.store, page.clock())
    return page.render("operator.html", signed=signed, rows=rows, notice=notice, tab="operator")


async def mark_org_paid(page: Page, request: Request, signed: Signed) -> Response:
    org_id = request.field("org_id")
    if org_id not in set(await page.store.org_ids()):
        return await operator_page(page, request, signed, notice=f"No organisation {org_id!r}.")
    org = await mark_paid(page.store, org_id)
    page.forget_org(org_id)
    return await operator_page(
        page, request, signed, notice=f"{org_id} marked paid: it is {org.state}."
    )
