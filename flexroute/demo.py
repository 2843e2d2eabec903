"""``flexroute demo``: emulator + proxy on free loopback ports, a mixed workload through the
real ``openai``, ``google-genai`` and ``anthropic`` SDKs, and a table of what each request
cost and saved. Needs no provider key.

The workload steers the emulator per request (header ``x-emulator``) so every run shows the
same story: flex that starts, flex that falls back at its deadline, flex refused then served,
and passthrough routes.

``--weather`` adds a few seconds of flex *weather*: the emulator's flex capacity follows its
seeded Markov process (:mod:`flexroute.emulator.weather`) through calm, an outage and the
recovery, sped up, while one flex request goes out every ``WEATHER_EVERY`` seconds; a
timeline shows what each met, how adaptive flex routed it and the probability of a flex start
it predicted (``p``): flex in calm, a few fallbacks as the outage begins, then straight to
standard (``flex-predicted-unavailable``, no wait) while probes watch, and flex again once a
probe sees it start. The segment is short (one request every 0.4 s), so its proxy follows the
last 4 attempts rather than 12 (``WEATHER_SETTINGS``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flexroute.config_file import load_settings
from flexroute.duration import format_seconds
from flexroute.money import format_usd
from flexroute.providers import PROVIDERS
from flexroute.table import render_table

if TYPE_CHECKING:
    from flexroute.emulator import Emulator

PROMPT = "Summarise flex processing in one line."


@dataclass(frozen=True)
class Clients:
    openai: Any
    gemini: Any
    anthropic: Any


# A step sends one request and returns flexroute's request id (from the response headers).
Step = tuple[str, Callable[[Clients], str]]


def _chat(model: str, emulator: str, *, stream: bool = False, **extra: Any) -> Callable[..., str]:
    def run(clients: Clients) -> str:
        raw = clients.openai.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=stream,
            extra_headers={"x-emulator": emulator}, **extra,
        )  # fmt: skip
        result = raw.parse()
        if stream:
            for _ in result:
                pass
        return str(raw.headers["x-flexroute-request-id"])

    return run


def _responses(model: str, emulator: str, start_within: str) -> Callable[..., str]:
    def run(clients: Clients) -> str:
        raw = clients.openai.responses.with_raw_response.create(
            model=model, input=PROMPT, extra_body={"start_within": start_within},
            extra_headers={"x-emulator": emulator},
        )  # fmt: skip
        raw.parse()
        return str(raw.headers["x-flexroute-request-id"])

    return run


def _gemini(model: str, emulator: str, start_within: str) -> Callable[..., str]:
    def run(clients: Clients) -> str:
        from google.genai import types

        headers = {"x-emulator": emulator, "x-flex-start-within": start_within}
        response = clients.gemini.models.generate_content(
            model=model, contents=PROMPT,
            config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
        )  # fmt: skip
        return str(response.sdk_http_response.headers["x-flexroute-request-id"])

    return run


def _claude(model: str, start_within: str) -> Callable[..., str]:
    def run(clients: Clients) -> str:
        raw = clients.anthropic.messages.with_raw_response.create(
            model=model, max_tokens=200, messages=[{"role": "user", "content": PROMPT}],
            extra_body={"start_within": start_within},
        )  # fmt: skip
        raw.parse()
        return str(raw.headers["x-flexroute-request-id"])

    return run


WORKLOAD: tuple[Step, ...] = (
    ("chat, flex starts at once",
     _chat("gpt-5-mini", "flex_queue=0.05;prompt_tokens=1200", extra_body={"start_within": "2s"})),
    ("chat stream, flex starts",
     _chat("gpt-5", "flex_queue=0.2;tokens=12", stream=True, extra_body={"start_within": "2s"})),
    ("responses, flex starts", _responses("gpt-5-nano", "flex_queue=0.1;prompt_tokens=3000", "1s")),
    ("chat, flex refused twice",
     _chat("gpt-5-mini", "flex_refuse=2;retry_after=0.1", extra_body={"start_within": "3s"})),
    ("chat, flex queue too long",
     _chat("gpt-5", "flex_queue=10", extra_body={"start_within": "500ms"})),
    ("gemini, flex starts", _gemini("gemini-2.5-flash", "flex_queue=0.1;prompt_tokens=2000", "2s")),
    ("gemini, flex 503s until deadline",
     _gemini("gemini-2.5-pro", "flex_refuse=always;refuse_status=503;retry_after=0.2", "700ms")),
    ("claude (proxy only)", _claude("claude-haiku-4-5", "5s")),
    ("chat, priority (passthrough)", _chat("gpt-5-mini", "", service_tier="priority")),
    ("chat stream, default", _chat("gpt-5-mini", "", stream=True)),
    ("chat, model without flex", _chat("gpt-4o", "", extra_body={"start_within": "1s"})),
)  # fmt: skip

_MONEY = ("standard_cost_usd", "cost_usd", "saving_usd", "fee_usd")

# The weather segment: seed 1 of the "outage" climate has gpt-5-mini calm, then out from
# 5.7 s to 14.8 s, recovering until 16.9 s, calm again; shown from 3 s at 3x speed.
WEATHER_SEED, WEATHER_START, WEATHER_SPEED = 1, 3.0, 3.0
WEATHER_EVERY, WEATHER_REQUESTS = 0.4, 20
WEATHER_SETTINGS = {"flex_memory": 4.0}


WHAT_NEXT = """
What next: run the proxy against the real providers and change only your client's base URL.

    OPENAI_API_KEY=sk-... flexroute serve          # sidecar on http://127.0.0.1:8080

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1")
    client.chat.completions.create(model="gpt-5-mini", messages=[...],
                                   extra_body={"start_within": "30s"})

Or keep no sidecar: flexroute.wrap(openai.OpenAI(), start_within="30s")."""


def run_demo(database_url: str | None = None, *, weather: bool = False) -> int:
    """Run the workload (and the weather segment); its records go to ``database_url``, else
    to a scratch ledger that is deleted afterwards (never the operator's real one)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="flexroute-demo-") as scratch:
        url = database_url or f"sqlite:///{scratch}/ledger.sqlite3"
        where = url if database_url else f"{url} (a scratch ledger, deleted at exit)"
        return _run(url, where, weather)


def _run(database_url: str, where: str, weather: bool) -> int:
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    from flexroute.emulator import EmulatorConfig
    from flexroute.emulator import create_app as emulator_app
    from flexroute.proxy import create_app
    from flexroute.testing import serve_in_thread

    base = load_settings()
    config = EmulatorConfig(seed=7)
    if weather:  # only requests without an x-emulator header meet it: the weather segment's
        config = EmulatorConfig(
            seed=7,
            weather=WEATHER_SEED,
            weather_start=WEATHER_START,
            weather_speed=WEATHER_SPEED,
        )
    app = emulator_app(config)
    with serve_in_thread(app) as emulator_url:
        update: dict[str, Any] = {f"{p.name}_base_url": emulator_url for p in PROVIDERS}
        update.update(database_url=database_url, spool_path=None)
        if weather:
            update.update(WEATHER_SETTINGS)
        settings = base.model_copy(update=update)
        with serve_in_thread(create_app(settings)) as proxy_url:
            key = "demo-key-not-a-real-key"
            clients = Clients(
                openai=openai.OpenAI(api_key=key, base_url=f"{proxy_url}/v1", max_retries=0),
                gemini=genai.Client(api_key=key, http_options=types.HttpOptions(
                    base_url=proxy_url, api_version="v1beta")),
                anthropic=anthropic.Anthropic(api_key=key, base_url=proxy_url, max_retries=0),
            )  # fmt: skip
            print(f"emulator {emulator_url}  proxy {proxy_url}\nledger {where}\n")
            rows = [_row(label, _fetch(proxy_url, run(clients))) for label, run in WORKLOAD]
            timeline = _weather(clients, proxy_url, app) if weather else None
    totals = [sum((Decimal(r[k]) for r in rows if r["cost_usd"] is not None), Decimal(0))
              for k in _MONEY]  # fmt: skip
    table = [[r["label"], r["model"], _budget(r["start_within_ms"]), r["route"],
              r["reason"] or "", r["tier_served"] or "", str(r["flex_wait_ms"] or ""),
              *(r[k] or "not reported" for k in _MONEY)]
             for r in rows]  # fmt: skip
    table.append(["total", "", "", "", "", "", "", *(format_usd(t) for t in totals)])
    headers = ["request", "model", "start_within", "route", "reason", "tier", "wait ms",
               "standard $", "cost $", "saving $", "fee $"]  # fmt: skip
    print(render_table(headers, table, align="lllllllrrrr"))
    print(
        "\nFee = 20% of the saving against the standard price; fallback and passthrough pay "
        "none.\nA passthrough stream whose client did not ask for usage is forwarded unchanged: "
        "its cost is not reported and is left out of the totals."
    )
    if timeline is not None:
        print(timeline)
    print(WHAT_NEXT)
    return 0


def _weather(clients: Clients, proxy_url: str, app: Emulator) -> str:
    """One flex request (gpt-5-mini, 1 s budget) every ``WEATHER_EVERY`` seconds through the
    emulator's weather; a timeline of what each met and how it was routed."""
    send = _chat("gpt-5-mini", "", extra_body={"start_within": "1s"})
    found: list[tuple[float, str, str | Exception]] = []
    lock = threading.Lock()

    weather = app.capacity.weather("gpt-5-mini")
    assert weather is not None, "the demo's emulator runs with weather"
    weather.segments(WEATHER_START + 120 * WEATHER_SPEED)  # drawn ahead: threads only read it
    app.capacity.reset()  # the weather's clock starts now, at WEATHER_START

    def one() -> None:
        at = app.capacity.now()
        state = weather.at(at).state.value
        try:
            outcome: str | Exception = send(clients)
        except Exception as error:  # shown in its row, not lost with the thread
            outcome = error
        with lock:
            found.append((at, state, outcome))

    threads = []
    for _ in range(WEATHER_REQUESTS):
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
        time.sleep(WEATHER_EVERY)
    for thread in threads:
        thread.join(timeout=60)
    table = []
    for at, state, outcome in sorted(found, key=lambda row: row[0]):
        if isinstance(outcome, Exception):
            table.append([f"{at:.1f}", state, f"failed: {outcome}"[:60], "", "", "", "", ""])
            continue
        r = _fetch(proxy_url, outcome)
        p = "?" if r.get("flex_probability") is None else f"{r['flex_probability']:.2f}"
        wait = str(r["flex_wait_ms"] or "0")
        table.append([f"{at:.1f}", state, r["route"], r["reason"] or "", p,
                      r["tier_served"] or "", wait, r["saving_usd"]])  # fmt: skip
    headers = ["weather s", "flex weather", "route", "reason", "p", "tier", "wait ms", "saving $"]
    return (
        f"\nFlex weather (seed {WEATHER_SEED}, outage climate, {WEATHER_SPEED:g}x speed): one "
        f"gpt-5-mini request, start_within 1s, every {WEATHER_EVERY:g} s; p: the predicted "
        "chance of a flex start in time (?: too little seen yet)\n"
        + render_table(headers, table, align="llllrlrr")
    )


def _budget(start_within_ms: int | None) -> str:
    return "" if start_within_ms is None else format_seconds(start_within_ms / 1000)


def _row(label: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, **record}


def _fetch(proxy_url: str, request_id: str) -> dict[str, Any]:
    url = f"{proxy_url}/flexroute/v1/requests/{request_id}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 -- our loopback proxy
        data: dict[str, Any] = json.loads(response.read())
    return data
