"""The organisation's read-only pages: Overview, Requests and one request's record."""

from __future__ import annotations

from flexroute.dashboard.app import Page
from flexroute.dashboard.chart import charts
from flexroute.dashboard.http import Request, Response
from flexroute.dashboard.queries import one_request, overview
from flexroute.dashboard.sessions import Signed

LATEST = 50  # requests on the Requests page


def org_of(signed: Signed) -> str:
    assert signed.session.org_id is not None  # the route table admits organisations only
    return signed.session.org_id


async def overview_page(page: Page, request: Request, signed: Signed) -> Response:
    org_id = org_of(signed)
    data = await overview(page.store, org_id, page.clock())
    state = await page.store.org(org_id)
    return page.render(
        "overview.html",
        signed=signed,
        org_id=org_id,
        data=data,
        chart=charts(data.days),
        org=state,
        tab="overview",
    )


async def requests_page(page: Page, request: Request, signed: Signed) -> Response:
    org_id = org_of(signed)
    records = await page.store.recent(org_id, LATEST)
    return page.render(
        "requests.html", signed=signed, org_id=org_id, records=records, tab="requests"
    )


async def request_page(page: Page, request: Request, signed: Signed) -> Response:
    org_id = org_of(signed)
    record = await one_request(page.store, org_id, request.params[0])
    if record is None:
        return page.render(
            "error.html", 404, message="No such request in your organisation.", signed=signed
        )
    return page.render(
        "request.html",
        signed=signed,
        org_id=org_id,
        record=record,
        data=record.to_json(),
        tab="requests",
    )
