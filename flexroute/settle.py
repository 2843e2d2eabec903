"""Pricing an outcome: usage and tier served → standard cost, actual cost, saving, fee.

Pure and synchronous. SPEC §3: the actual cost is the final call's usage at the tier the
provider *reports*; refused flex attempts (429/503) are not billed by providers, and a flex
attempt cancelled before it produced output is taken as unbilled. A call with no usage, an
unpriced model or a tier the catalog has no price for has unknown costs and no fee. So has a
call whose usage holds something the catalog does not price for that model (a modality such as
Gemini audio on a model without an audio price, a cache-write duration): then ``Priced.reason``
says why (``model-unpriced-modality``, ``model-unpriced-cache-write``) for the ledger record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from flexroute.catalog import ModelPrices, UnpricedUsageError
from flexroute.dialects.sse import encode_comment
from flexroute.errors import CatalogError
from flexroute.fees import compute_charge
from flexroute.ledger.base import LedgerRecord
from flexroute.money import ZERO, format_usd
from flexroute.usage import Tier, Usage


@dataclass(frozen=True, slots=True)
class Priced:
    standard_cost: Decimal | None
    actual_cost: Decimal | None
    saving: Decimal
    fee: Decimal
    reason: str | None = None  # why the costs are unknown although the model is priced


def price(
    prices: ModelPrices | None,
    usage: Usage | None,
    tier_served: Tier | None,
    *,
    flex_route: bool,
    fee_rate: Decimal,
) -> Priced:
    """Costs and fee of one call; billable only if it went flex *and* was served at flex."""
    if prices is None or usage is None:
        return Priced(None, None, ZERO, ZERO)
    try:
        standard = prices.cost(Tier.STANDARD, usage)
        actual = prices.cost(tier_served or Tier.STANDARD, usage)
    except UnpricedUsageError as unpriced:  # refuse loudly rather than price part of the call
        return Priced(None, None, ZERO, ZERO, unpriced.reason)
    except CatalogError:  # the catalog has no price for the tier served
        try:
            return Priced(prices.cost(Tier.STANDARD, usage), None, ZERO, ZERO)
        except CatalogError:
            return Priced(None, None, ZERO, ZERO)
    billable = flex_route and tier_served is Tier.FLEX
    charge = compute_charge(standard, actual, billable=billable, fee_rate=fee_rate)
    return Priced(standard, actual, charge.saving, charge.fee)


def money_headers(record: LedgerRecord) -> list[tuple[str, str]]:
    """``x-flexroute-*-usd`` response headers, when both costs are known."""
    if record.actual_cost is None or record.standard_cost is None:
        return []
    return [
        ("x-flexroute-cost-usd", format_usd(record.actual_cost)),
        ("x-flexroute-standard-cost-usd", format_usd(record.standard_cost)),
        ("x-flexroute-saving-usd", format_usd(record.saving)),
        ("x-flexroute-fee-usd", format_usd(record.fee)),
    ]


def cost_comment(record: LedgerRecord) -> bytes:
    """The same figures as an SSE comment that closes a stream."""
    fields = dict(money_headers(record))
    fields["x-flexroute-request-id"] = record.request_id
    return encode_comment("flexroute " + json.dumps(fields, separators=(",", ":")))
