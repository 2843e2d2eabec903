"""The price catalog: ``pricing/<provider>.toml`` files -> exact USD cost of a call.

Each provider's file lists models with prices in USD per 1M tokens, per service tier
(``standard``, ``flex``, ``priority``), written as decimal *strings* with at most six decimal
places, so that every cost is a whole number of pico-USD (``pricing/README.md`` documents the
format and where each figure comes from). Files are validated by pydantic models at the edge and
turned into the frozen dataclasses of :mod:`flexroute.prices` (re-exported here); every problem
is a :class:`~flexroute.errors.CatalogError` naming the file, the model and the field.

How a call is priced (:meth:`ModelPrices.cost`):

* uncached prompt tokens at ``input``, cache reads at ``cached_input``;
* cache writes at ``cache_write`` (Anthropic's 5-minute, OpenAI's 30-minute writes),
  ``cache_write_1h`` (Anthropic's 1-hour) and ``cache_write_12h`` (OpenAI's 12-hour writes). A
  model whose tiers list no ``cache_write`` does not bill writes separately and prices them as
  plain input (OpenAI before GPT-5.6, Gemini); a model that does list it lists it on every tier
  (the loader checks), and a write duration it has no price for is *unpriced*, never guessed;
* modalities: ``input``/``cached_input`` price the prompt modalities the model lists in
  ``input_modalities`` (default: text); audio outside that list is priced at ``input_audio``/
  ``cached_input_audio`` where the tier has them; output modalities other than those in
  ``output_modalities`` (default: text) have no price. A modality without a price makes the
  whole call unpriced (:class:`UnpricedUsageError`, reason ``model-unpriced-modality``);
* output, including reasoning tokens, at ``output``;
* when the prompt (``usage.input_tokens``) is *above* a model's ``long_context_threshold``, the
  whole request — every token, output included — is priced at the long-context rates.

The packaged catalog lives in the wheel as ``flexroute/_pricing`` (pyproject force-includes the
repository's ``pricing/``); a source checkout reads ``pricing/`` next to the package.
"""

from __future__ import annotations

import datetime
import functools
import re
import tomllib
from collections.abc import Iterable
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flexroute.errors import CatalogError
from flexroute.prices import (
    UNPRICED_CACHE_WRITE,
    UNPRICED_MODALITY,
    ModelPrices,
    Override,
    TierPrices,
    UnpricedUsageError,
)
from flexroute.table import render_table
from flexroute.usage import Tier

__all__ = [
    "UNPRICED_CACHE_WRITE",
    "UNPRICED_MODALITY",
    "Catalog",
    "ModelPrices",
    "Override",
    "TierPrices",
    "UnpricedUsageError",
    "default_catalog",
]

MAX_PRICE_PLACES = 6
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3})$")  # -2025-08-07, -20250514, -001
_PROVIDER_ALIASES = {"google": "gemini"}
_TIER_ORDER = (Tier.STANDARD, Tier.FLEX, Tier.PRIORITY)
_TABLE_HEADERS = ("provider", "model", "tier", "input", "cached", "cache write", "output", "long")
_TABLE_LEGEND = (
    "USD per 1M tokens. cache write: short/1h/12h write prices ('-': billed as input).\n"
    "long: a prompt above this many input tokens reprices the whole request (rows '>N')."
)


class Catalog:
    """All priced models, looked up by provider and the model name a request carries."""

    __slots__ = ("_index", "_models")

    def __init__(self, models: Iterable[ModelPrices]) -> None:
        self._models = tuple(models)
        self._index: dict[str, dict[str, ModelPrices]] = {}
        for prices in self._models:
            names = self._index.setdefault(prices.provider, {})
            for name in prices._lookup_names:
                other = names.get(name)
                if other is not None and other is not prices:
                    raise CatalogError(
                        f'{prices.provider}: "{name}" names both model "{other.model}" and '
                        f'model "{prices.model}"; a model name or alias must be unique'
                    )
                names[name] = prices

    @classmethod
    def load(cls, directory: Path | None = None) -> Catalog:
        """Load every ``*.toml`` in ``directory`` (default: the packaged catalog)."""
        root: Traversable = _packaged_root() if directory is None else directory
        if not root.is_dir():
            raise CatalogError(f"price catalog directory {root} does not exist")
        files = sorted(
            (entry for entry in root.iterdir() if entry.name.endswith(".toml") and entry.is_file()),
            key=lambda entry: entry.name,
        )
        if not files:
            raise CatalogError(f"price catalog directory {root} holds no *.toml files")
        models: list[ModelPrices] = []
        for file in files:
            models.extend(_load_file(file, label=f"{root.name}/{file.name}"))
        return cls(models)

    def lookup(self, provider: str, model: str) -> ModelPrices | None:
        """Prices for ``model`` by exact name, alias, dated snapshot or ``models/`` path; or None.

        ``gpt-5-2025-08-07`` finds ``gpt-5``, ``models/gemini-2.5-flash-001`` finds
        ``gemini-2.5-flash`` — unless the snapshot is priced as a model of its own. Names are
        compared case-insensitively. A model the catalog does not know is unpriced: None.
        """
        provider = provider.strip().lower()
        names = self._index.get(_PROVIDER_ALIASES.get(provider, provider))
        if names is None:
            return None
        name = model.strip().lower().removeprefix("models/")
        found = names.get(name)
        if found is None:
            base = _SNAPSHOT.sub("", name)
            if base != name:
                found = names.get(base)
        return found

    def models(self) -> list[ModelPrices]:
        """Every priced model, in catalog order (by provider file, then as written)."""
        return list(self._models)

    def price_table(self) -> str:
        """The catalog as the plain-text table ``flexroute prices`` prints."""
        rows: list[tuple[str, ...]] = []
        for prices in self._models:
            threshold = prices.long_context_threshold
            for tier in _TIER_ORDER:
                if tier in prices.tiers:
                    rows.append(_row(prices, str(tier), prices.tiers[tier], threshold))
            for tier in _TIER_ORDER:
                if threshold is not None and tier in prices.long_context_tiers:
                    label = f"{tier} >{_tokens(threshold)}"
                    rows.append(_row(prices, label, prices.long_context_tiers[tier], None))
        table = render_table(_TABLE_HEADERS, rows, align="lllrrrrr")
        return f"{table}\n\n{_TABLE_LEGEND}"


@functools.cache
def default_catalog() -> Catalog:
    """The packaged catalog, loaded once per process."""
    return Catalog.load()


# --- the file edge -------------------------------------------------------------------------


class _TierEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_write_12h: Decimal | None = None
    input_audio: Decimal | None = None
    cached_input_audio: Decimal | None = None
    output: Decimal

    @field_validator("*", mode="before")
    @classmethod
    def _price(cls, value: object) -> Decimal:
        return _parse_price(value)

    def prices(self) -> TierPrices:
        cached = self.input if self.cached_input is None else self.cached_input
        return TierPrices(
            self.input,
            cached,
            self.output,
            self.cache_write,
            self.cache_write_1h,
            self.cache_write_12h,
            self.input_audio,
            self.cached_input_audio,
        )


class _Tiers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    standard: _TierEntry
    flex: _TierEntry | None = None
    priority: _TierEntry | None = None

    def prices(self) -> dict[Tier, TierPrices]:
        entries = {Tier.STANDARD: self.standard, Tier.FLEX: self.flex, Tier.PRIORITY: self.priority}
        return {tier: entry.prices() for tier, entry in entries.items() if entry is not None}


class _LongContext(_Tiers):
    threshold_input_tokens: int = Field(gt=0, strict=True)


class _OverrideEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=r"^(long_context\.)?(standard|flex|priority)\.[a-z_0-9]+$")
    theirs: str  # their figure as a decimal string, or "none"
    reason: str = Field(min_length=20)

    def override(self) -> Override:
        tier, _, name = self.field.rpartition(".")
        if name not in _TierEntry.model_fields:
            raise ValueError(f'"{self.field}" does not name a price field')
        theirs = None if self.theirs == "none" else _parse_price(self.theirs)
        return Override(tier, name, theirs, self.reason)


# A model that prices one of these on any tier must price it on every tier (long context too):
# a tier without it would silently bill those tokens as plain input.
_ALL_OR_NONE = ("cache_write", "cache_write_1h", "cache_write_12h", "input_audio")
_MODALITY = re.compile(r"^[a-z]+$")


class _ModelEntry(_Tiers):
    aliases: list[str] = Field(default_factory=list)
    source: str = Field(pattern=r"^https://\S+$")
    checked: datetime.date
    notes: str = ""
    input_modalities: list[str] = Field(default_factory=lambda: ["text"])
    output_modalities: list[str] = Field(default_factory=lambda: ["text"])
    long_context: _LongContext | None = None
    genai_prices_overrides: list[_OverrideEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _long_context_tiers_are_priced(self) -> _ModelEntry:
        if self.long_context is not None:
            for tier in ("flex", "priority"):
                if getattr(self.long_context, tier) is not None and getattr(self, tier) is None:
                    raise ValueError(f"long_context.{tier} is priced but {tier} is not")
        return self

    @model_validator(mode="after")
    def _tiers_agree_on_what_they_price(self) -> _ModelEntry:
        tables = {f"{name}": entry for name, entry in _entries(self, "").items()}
        if self.long_context is not None:
            tables.update(_entries(self.long_context, "long_context."))
        for price in _ALL_OR_NONE:
            have = sorted(
                name for name, entry in tables.items() if getattr(entry, price) is not None
            )
            lack = sorted(name for name, entry in tables.items() if getattr(entry, price) is None)
            if have and lack:
                raise ValueError(
                    f"{price} is priced in {', '.join(have)} but not in {', '.join(lack)}; a "
                    "model that prices it must price it on every tier"
                )
        for modality in (*self.input_modalities, *self.output_modalities):
            if not _MODALITY.fullmatch(modality):
                raise ValueError(f'"{modality}" is not a lower-case modality name like "text"')
        for override in self.genai_prices_overrides:
            override.override()
        return self


def _entries(tiers: _Tiers, prefix: str) -> dict[str, _TierEntry]:
    found = {"standard": tiers.standard, "flex": tiers.flex, "priority": tiers.priority}
    return {f"{prefix}{name}": entry for name, entry in found.items() if entry is not None}


class _PricingFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, _ModelEntry]


def _parse_price(value: object) -> Decimal:
    if isinstance(value, float):
        # pydantic reports a ValueError (not a TypeError) as a validation error
        raise ValueError(  # noqa: TRY004
            f'{value!r} is a TOML float, which is inexact; write prices as strings like "1.25"'
        )
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f'{shown} is not a decimal price; write prices as strings like "1.25"')
    price = Decimal(value)
    if price < 0:
        raise ValueError(f'"{value}" is negative; a price is USD per 1M tokens, 0 or more')
    exponent = price.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_PLACES:
        raise ValueError(
            f'"{value}" has more than {MAX_PRICE_PLACES} decimal places per 1M tokens, so costs '
            "would not be whole pico-USD"
        )
    return price


def _load_file(file: Traversable, *, label: str) -> list[ModelPrices]:
    provider = file.name.removesuffix(".toml")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{label}: not valid TOML: {exc}") from exc
    try:
        parsed = _PricingFile.model_validate(data)
    except ValidationError as exc:
        raise CatalogError("\n".join(_describe(label, error) for error in exc.errors())) from None
    return [_model_prices(provider, name, entry) for name, entry in parsed.models.items()]


def _model_prices(provider: str, name: str, entry: _ModelEntry) -> ModelPrices:
    long_context = entry.long_context
    return ModelPrices(
        provider=provider,
        model=name,
        tiers=MappingProxyType(entry.prices()),
        long_context_threshold=None
        if long_context is None
        else long_context.threshold_input_tokens,
        long_context_tiers=MappingProxyType({} if long_context is None else long_context.prices()),
        source=entry.source,
        checked=entry.checked,
        aliases=tuple(entry.aliases),
        notes=entry.notes,
        input_modalities=frozenset(entry.input_modalities),
        output_modalities=frozenset(entry.output_modalities),
        overrides=tuple(override.override() for override in entry.genai_prices_overrides),
    )


def _describe(label: str, error: Any) -> str:
    loc = tuple(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known field"
    elif error["type"] == "string_pattern_mismatch" and loc[-1:] == ("source",):
        message = f'"{error["input"]}" is not an https:// URL'
    if loc[:1] != ("models",) or len(loc) < 2:
        return f'{label}: field "{".".join(loc)}": {message}'
    return f'{label}: model "{loc[1]}", field "{".".join(loc[2:]) or "(entry)"}": {message}'


def _packaged_root() -> Traversable:
    try:
        packaged = resources.files("flexroute") / "_pricing"
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError, ValueError):  # pragma: no cover - unusual installs
        pass
    source = Path(__file__).resolve().parent.parent / "pricing"
    if source.is_dir():
        return source
    raise CatalogError(
        "no packaged price catalog: neither flexroute/_pricing (wheel) nor pricing/ next to the "
        "package (source checkout) exists"
    )


def _row(
    prices: ModelPrices, tier: str, tier_prices: TierPrices, threshold: int | None
) -> tuple[str, ...]:
    writes = [
        p
        for p in (tier_prices.cache_write, tier_prices.cache_write_1h, tier_prices.cache_write_12h)
        if p is not None
    ]
    return (
        prices.provider,
        prices.model,
        tier,
        _usd(tier_prices.input),
        _usd(tier_prices.cached_input),
        "/".join(_usd(price) for price in writes) or "-",
        _usd(tier_prices.output),
        "-" if threshold is None else _tokens(threshold),
    )


def _usd(price: Decimal) -> str:
    if price == price.quantize(Decimal("0.01")):
        return f"{price:.2f}"
    return f"{price.normalize():f}"


def _tokens(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)
