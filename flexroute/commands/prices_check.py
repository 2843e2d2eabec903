"""``flexroute prices check``: the shipped catalog against the installed ``genai-prices``.

Our catalog (``pricing/*.toml``) is the source flexroute bills from; pydantic's ``genai-prices``
is an independent, well-kept transcription of the same provider pages, in ``Decimal``, with
service-tier variants and dates. The check resolves genai-prices' price for every model and
tier the catalog lists (standard, flex, priority; short and long context) at one moment
(default now) and prints every difference: model, field, ours, theirs, their date.

What fails the check (exit 1) is a difference in a *priced field*: both sides price a field and
disagree, or genai-prices prices a tier of one of our models that we do not. A catalog entry
may record a reasoned ``genai_prices_overrides`` item for a figure it knowingly prices
differently; the check honours it only while genai-prices still says the recorded figure,
and prints it with its reason. What genai-prices does not model is reported, never failed: a
model or tier it lacks, and OpenAI's 12-hour cache writes (it has no unit for them).

Effective prices are compared, not spellings: a catalog tier without ``cached_input`` prices
cache reads as input, a model without ``cache_write`` bills writes as input, and genai-prices
prices a sub-unit it has no figure for (audio, cache reads) at its parent, input.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot

from flexroute.catalog import Catalog, ModelPrices, TierPrices, default_catalog
from flexroute.table import render_table
from flexroute.usage import Tier

__all__ = ["Difference", "check", "compare"]

# flexroute provider -> genai-prices provider id, and the wire name of each tier there
_PROVIDERS = {"openai": "openai", "gemini": "google", "anthropic": "anthropic"}
_WIRE = {Tier.STANDARD: "default", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
_VERIFIED = re.compile(r"(?:verified|checked)(?: on)? (\d{4}-\d{2}-\d{2})")
_HEADERS = ("provider", "model", "field", "ours", "theirs", "their date", "status")

# status words, and whether the status fails the check
DIFFERS = "DIFFERS"
ONLY_THEIRS = "MISSING HERE"
OVERRIDDEN = "override"
NOT_THEIRS = "not in genai-prices"
_FAILING = frozenset({DIFFERS, ONLY_THEIRS})


@dataclass(frozen=True, slots=True)
class Difference:
    """One line of the report."""

    provider: str
    model: str
    field: str  # e.g. "flex.input", "long_context.standard.output", "(model)"
    ours: Decimal | None
    theirs: Decimal | None
    their_date: str
    status: str
    reason: str = ""

    @property
    def fails(self) -> bool:
        return self.status in _FAILING


def compare(catalog: Catalog, *, at: dt.datetime | None = None) -> list[Difference]:
    """Every difference between ``catalog`` and the installed genai-prices at ``at``."""
    when = at or dt.datetime.now(dt.UTC)
    snapshot = get_snapshot()
    providers = {p.id: p for p in snapshot.providers}
    out: list[Difference] = []
    for prices in catalog.models():
        provider = providers.get(_PROVIDERS.get(prices.provider, prices.provider))
        info = None if provider is None else _find(provider, prices)
        if info is None:
            out.append(_line(prices, "(model)", None, None, "-", NOT_THEIRS))
            continue
        out.extend(_compare_model(prices, info, when))
    return out


def check(directory: Path | None = None, *, at: dt.datetime | None = None) -> int:
    """Print the report for the catalog in ``directory`` (default: the shipped one); 0 or 1."""
    catalog = default_catalog() if directory is None else Catalog.load(directory)
    differences = compare(catalog, at=at)
    theirs = f"genai-prices {version('genai-prices')}"
    failing = [d for d in differences if d.fails]
    overridden = [d for d in differences if d.status == OVERRIDDEN]
    if differences:
        rows = [
            (d.provider, d.model, d.field, _usd(d.ours), _usd(d.theirs), d.their_date, d.status)
            for d in differences
        ]
        print(render_table(_HEADERS, rows, align="lllrrll"))
        print()
    for d in overridden:
        print(f"override {d.provider} {d.model} {d.field}: {d.reason}")
    if overridden:
        print()
    compared = len({(p.provider, p.model) for p in catalog.models()})
    summary = (
        f"{compared} models compared with {theirs}: {len(failing)} difference(s) in priced "
        f"fields, {len(overridden)} documented override(s), "
        f"{len(differences) - len(failing) - len(overridden)} note(s)"
    )
    if failing:
        print(f"{summary}. Fix the catalog, or record a reasoned override (pricing/README.md).")
        return 1
    print(f"{summary}. The catalog agrees with {theirs} on every priced field.")
    return 0


# --- genai-prices side -----------------------------------------------------------------------


def _find(provider: gp.Provider, prices: ModelPrices) -> gp.ModelInfo | None:
    for name in (prices.model, *prices.aliases):
        for info in provider.models:
            if info.is_match(name):
                return info
    return None


def _their_tier(
    info: gp.ModelInfo, tier: Tier, when: dt.datetime
) -> tuple[gp.ModelPrice, str] | None:
    """genai-prices' prices for ``tier`` and their date, or None when it does not model it."""
    base = info.get_prices(when)
    if tier is Tier.STANDARD:
        return base, _standard_date(info, when)
    wanted = {"service_tier": _WIRE[tier]}
    for variant in info.price_variants or ():
        if variant.when != wanted:
            continue
        if variant.constraint is not None and not variant.constraint.active(when):
            continue
        date = _constraint_date(variant.constraint) or _comment_date(info)
        return info.get_prices(when, wanted), date
    return None


def _standard_date(info: gp.ModelInfo, when: dt.datetime) -> str:
    """The later of the active price's start date and the date its comments were verified."""
    dates = [_comment_date(info)]
    if isinstance(info.prices, list):
        for conditional in reversed(info.prices):
            if conditional.constraint is None or conditional.constraint.active(when):
                dates.append(_constraint_date(conditional.constraint))
                break
    known = [d for d in dates if d not in ("", "-")]
    return max(known) if known else "-"


def _constraint_date(constraint: object) -> str:
    start = getattr(constraint, "start_date", None)
    return start.isoformat() if isinstance(start, dt.date) else ""


def _comment_date(info: gp.ModelInfo) -> str:
    dates = _VERIFIED.findall(info.price_comments or "")
    return max(dates) if dates else "-"


def _value(price: Decimal | gp.TieredPrices | None, threshold: int | None) -> Decimal | None:
    """Their figure below (``threshold`` None) or above our long-context threshold."""
    if price is None or isinstance(price, Decimal):
        return price
    if threshold is None:
        return price.base
    above = [t for t in price.tiers if t.start <= threshold]
    return above[-1].price if above else price.base


def _thresholds(model_price: gp.ModelPrice) -> set[int]:
    found: set[int] = set()
    for value in vars(model_price).values():
        if isinstance(value, gp.TieredPrices):
            found.update(t.start for t in value.tiers)
    return found


# --- the comparison --------------------------------------------------------------------------


def _compare_model(
    prices: ModelPrices, info: gp.ModelInfo, when: dt.datetime
) -> Iterator[Difference]:
    threshold = prices.long_context_threshold
    for tier in (Tier.STANDARD, Tier.FLEX, Tier.PRIORITY):
        ours = prices.tiers.get(tier)
        theirs = _their_tier(info, tier, when)
        name = str(tier)
        if ours is None and theirs is None:
            continue
        if theirs is None:
            yield _line(prices, f"{name}.*", None, None, "-", NOT_THEIRS)
            continue
        model_price, date = theirs
        if ours is None:
            value = _value(model_price.input_mtok, None)
            yield _judge(prices, f"{name}.input", None, value, date)
            continue
        yield from _compare_tier(prices, name, ours, model_price, None, date)
        long = prices.long_context_tiers.get(tier)
        if long is None or threshold is None:
            continue
        starts = _thresholds(model_price)
        if starts and threshold not in starts:
            shown = min(starts)
            yield _judge(prices, "long_context.threshold", Decimal(threshold), Decimal(shown), date)
        yield from _compare_tier(prices, f"long_context.{name}", long, model_price, threshold, date)


def _compare_tier(
    prices: ModelPrices,
    name: str,
    ours: TierPrices,
    theirs: gp.ModelPrice,
    threshold: int | None,
    date: str,
) -> Iterator[Difference]:
    def their(key: str) -> Decimal | None:
        return _value(getattr(theirs, key), threshold)

    their_input = their("input_mtok")
    pairs: list[tuple[str, Decimal | None, Decimal | None]] = [
        ("input", ours.input, their_input),
        ("cached_input", ours.cached_input, their("cache_read_mtok") or their_input),
        ("output", ours.output, their("output_mtok")),
    ]
    writes = ours.cache_write is not None or their("cache_write_mtok") is not None
    if writes:
        ours_write = ours.input if ours.cache_write is None else ours.cache_write
        pairs.append(("cache_write", ours_write, their("cache_write_mtok") or their_input))
    if ours.cache_write_1h is not None or their("cache_write_1h_mtok") is not None:
        pairs.append(("cache_write_1h", ours.cache_write_1h, their("cache_write_1h_mtok")))
    pairs.extend(
        _audio_pairs(
            prices, ours, their("input_audio_mtok"), their("cache_audio_read_mtok"), their_input
        )
    )
    for field, mine, other in pairs:
        if mine != other:
            yield _judge(prices, f"{name}.{field}", mine, other, date)


def _audio_pairs(
    prices: ModelPrices,
    ours: TierPrices,
    their_audio: Decimal | None,
    their_cached_audio: Decimal | None,
    their_input: Decimal | None,
) -> Iterable[tuple[str, Decimal | None, Decimal | None]]:
    """Audio prompt prices, compared where either side says something about audio."""
    mine: Decimal | None
    mine_cached: Decimal | None
    if "audio" in prices.input_modalities:
        mine, mine_cached = ours.input, ours.cached_input
    elif ours.input_audio is not None:
        mine = ours.input_audio
        mine_cached = mine if ours.cached_input_audio is None else ours.cached_input_audio
    else:
        mine = mine_cached = None  # audio is unpriced here
    if mine is None and their_audio is None:
        return []
    pairs: list[tuple[str, Decimal | None, Decimal | None]] = [
        ("input_audio", mine, their_audio or their_input)
    ]
    if their_cached_audio is not None or ours.cached_input_audio is not None:
        pairs.append(("cached_input_audio", mine_cached, their_cached_audio))
    return pairs


def _judge(
    prices: ModelPrices, field: str, ours: Decimal | None, theirs: Decimal | None, date: str
) -> Difference:
    tier, _, name = field.rpartition(".")
    for override in prices.overrides:
        if (override.tier, override.field) == (tier, name) and override.theirs == theirs:
            return _line(prices, field, ours, theirs, date, OVERRIDDEN, override.reason)
    status = DIFFERS if ours is not None else ONLY_THEIRS
    return _line(prices, field, ours, theirs, date, status)


def _line(
    prices: ModelPrices,
    field: str,
    ours: Decimal | None,
    theirs: Decimal | None,
    date: str,
    status: str,
    reason: str = "",
) -> Difference:
    return Difference(prices.provider, prices.model, field, ours, theirs, date, status, reason)


def _usd(price: Decimal | None) -> str:
    return "-" if price is None else f"{price.normalize():f}"
