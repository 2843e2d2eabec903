"""The Billing page: balance, credit, invoices, the card on file, the card form's two calls
(:mod:`.stripe_setup`) and an invoice as CSV."""

from __future__ import annotations

import csv
import io

from flexroute.dashboard.app import Page
from flexroute.dashboard.http import Request, Response
from flexroute.dashboard.pages import org_of
from flexroute.dashboard.queries import billing
from flexroute.dashboard.sessions import Signed
from flexroute.errors import PaymentError
from flexroute.money import format_usd

INVOICE_HEADER = [
    "invoice_id",
    "period",
    "amount_usd",
    "credit_used_usd",
    "status",
    "reason",
    "attempts",
    "created_at",
    "updated_at",
]
LINES_HEADER = [
    "day",
    "model",
    "route",
    "requests",
    "cost_usd",
    "standard_cost_usd",
    "saving_usd",
    "fee_usd",
]
# A cell starting with one of these is a formula to a spreadsheet; model names come from
# clients, so such cells are quoted with a leading apostrophe (CSV injection).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


async def billing_page(
    page: Page, request: Request, signed: Signed, **notes: str | None
) -> Response:
    org_id = org_of(signed)
    data = await billing(page.store, org_id)
    card = None if page.cards is None else await page.cards.card_on_file(data.org)
    return page.render(
        "billing.html",
        signed=signed,
        org_id=org_id,
        data=data,
        card=card,
        cards=page.cards,
        notice=notes.get("notice"),
        error=notes.get("error"),
        tab="billing",
    )


async def setup_card(page: Page, request: Request, signed: Signed) -> Response:
    """The card form's first call: a SetupIntent's client secret (JSON)."""
    if page.cards is None:
        return Response.json(
            404,
            {
                "error": "Cards are added through Stripe; the payment "
                "processor is not stripe (FLEXROUTE_PAYMENT_PROCESSOR)."
            },
        )
    try:
        secret = await page.cards.start(org_of(signed))
    except PaymentError as error:
        return Response.json(502, {"error": str(error)})
    return Response.json(
        200, {"client_secret": secret, "publishable_key": page.cards.publishable_key}
    )


async def save_card(page: Page, request: Request, signed: Signed) -> Response:
    """The card form's second call: the confirmed SetupIntent's id; retries what is due."""
    if page.cards is None:
        return await billing_page(page, request, signed, error="Cards are not handled here.")
    org_id = org_of(signed)
    result = await page.cards.finish(org_id, request.field("setup_intent"))
    page.forget_org(org_id)
    if result.error is not None:
        return await billing_page(page, request, signed, error=result.error)
    org = result.org
    if org.state == "past_due":
        reason = (org.reason or "payment_failed").replace("_", " ")
        return await billing_page(
            page,
            request,
            signed,
            error=f"The card was saved, but the charge of ${org.amount_due:,.2f} failed "
            f"({reason}). Try another card.",
        )
    return await billing_page(
        page, request, signed, notice="Card saved. Billable flex requests work again."
    )


async def invoice_csv(page: Page, request: Request, signed: Signed) -> Response:
    """One invoice, then exactly the fees it covers by day, model and route, as CSV."""
    org_id = org_of(signed)
    invoices = {i.invoice_id: i for i in await page.store.invoices(org_id)}
    invoice = invoices.get(request.params[0])
    if invoice is None:
        return page.render(
            "error.html", 404, message="No such invoice in your organisation.", signed=signed
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(INVOICE_HEADER)
    writer.writerow(
        [
            invoice.invoice_id,
            invoice.period,
            format_usd(invoice.amount),
            format_usd(invoice.credit_used),
            invoice.status,
            invoice.reason or "",
            invoice.attempts,
            invoice.created_at.isoformat(),
            invoice.updated_at.isoformat(),
        ]
    )
    writer.writerow([])
    writer.writerow(LINES_HEADER)
    for row in await page.store.invoice_usage(invoice.invoice_id):
        writer.writerow(
            [
                row.day,
                _cell(row.model or ""),
                row.route,
                row.requests,
                format_usd(row.cost),
                format_usd(row.standard_cost),
                format_usd(row.saving),
                format_usd(row.fee),
            ]
        )
    name = f"flexroute-{invoice.period}-{invoice.invoice_id}.csv"
    return Response(
        200,
        out.getvalue().encode(),
        "text/csv; charset=utf-8",
        [("content-disposition", f'attachment; filename="{name}"')],
    )


def _cell(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA) else text
