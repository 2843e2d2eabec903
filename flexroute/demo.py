"""``flexroute demo``: emulator + proxy on free loopback ports, a mixed workload through the
real ``openai`` SDK, and a table of what each request cost and saved. Needs no provider key.

The workload steers the emulator per request (header ``x-emulator``) so every run shows the
same story: flex that starts, flex that falls back at its deadline, flex refused then served,
and passthrough routes.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flexroute.config import Settings
from flexroute.money import format_usd
from flexroute.table import render_table


@dataclass(frozen=True)
class Step:
    label: str
    run: Callable[[Any], Any]  # openai.OpenAI -> raw response (with headers)


def _chat(model: str, emulator: str, *, stream: bool = False, **extra: Any) -> Callable[[Any], Any]:
    def run(client: Any) -> Any:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "Summarise flex processing in one line."}],
            stream=stream,
            extra_headers={"x-emulator": emulator},
            **extra,
        )
        result = raw.parse()
        if stream:
            for _ in result:
                pass
        return raw

    return run


def _responses(model: str, emulator: str, **extra: Any) -> Callable[[Any], Any]:
    def run(client: Any) -> Any:
        raw = client.responses.with_raw_response.create(
            model=model,
            input="Name three uses of batch inference.",
            extra_headers={"x-emulator": emulator},
            **extra,
        )
        raw.parse()
        return raw

    return run


WORKLOAD = (
    Step(
        "chat, flex starts at once",
        _chat(
            "gpt-5-mini", "flex_queue=0.05;prompt_tokens=1200", extra_body={"start_within": "2s"}
        ),
    ),
    Step(
        "chat stream, flex starts",
        _chat("gpt-5", "flex_queue=0.2;tokens=12", stream=True, extra_body={"start_within": "2s"}),
    ),
    Step(
        "responses, flex starts",
        _responses(
            "gpt-5-nano", "flex_queue=0.1;prompt_tokens=3000", extra_body={"start_within": "1s"}
        ),
    ),
    Step(
        "chat, flex refused twice",
        _chat("gpt-5-mini", "flex_refuse=2;retry_after=0.1", extra_body={"start_within": "3s"}),
    ),
    Step(
        "chat, flex queue too long",
        _chat("gpt-5", "flex_queue=10", extra_body={"start_within": "500ms"}),
    ),
    Step("chat, priority (passthrough)", _chat("gpt-5-mini", "", service_tier="priority")),
    Step("chat stream, default", _chat("gpt-5-mini", "", stream=True)),
    Step("chat, model without flex", _chat("gpt-4o", "", extra_body={"start_within": "1s"})),
)


def run_demo() -> int:
    import openai

    from flexroute.emulator import EmulatorConfig
    from flexroute.emulator import create_app as emulator_app
    from flexroute.proxy import create_app
    from flexroute.testing import serve_in_thread

    base = Settings()
    with serve_in_thread(emulator_app(EmulatorConfig(seed=7))) as emulator_url:
        settings = base.model_copy(update={"openai_base_url": emulator_url})
        with serve_in_thread(create_app(settings)) as proxy_url:
            client = openai.OpenAI(
                api_key="demo-key-not-a-real-key", base_url=f"{proxy_url}/v1", max_retries=0
            )
            print(f"emulator {emulator_url}  proxy {proxy_url}  ledger {settings.database_url}\n")
            rows, totals = [], [Decimal(0)] * 4
            for step in WORKLOAD:
                raw = step.run(client)
                record = _fetch(
                    f"{proxy_url}/flexroute/v1/requests/{raw.headers['x-flexroute-request-id']}"
                )
                money = [
                    record[k] for k in ("standard_cost_usd", "cost_usd", "saving_usd", "fee_usd")
                ]
                if record["cost_usd"] is not None:
                    totals = [t + Decimal(m) for t, m in zip(totals, money, strict=True)]
                rows.append(
                    [
                        step.label,
                        record["model"],
                        record["route"],
                        record["reason"] or "",
                        record["tier_served"] or "",
                        str(record["flex_wait_ms"] or ""),
                        *("usage not reported" if m is None else m for m in money),
                    ]
                )
            rows.append(["total", "", "", "", "", "", *(format_usd(t) for t in totals)])
    headers = [
        "request",
        "model",
        "route",
        "reason",
        "tier",
        "wait ms",
        "standard $",
        "cost $",
        "saving $",
        "fee $",
    ]
    print(render_table(headers, rows, align="llllllrrrr"))
    print(
        "\nFee = 20% of the saving against the standard price; fallback and passthrough pay "
        "none.\nA passthrough stream whose client did not ask for usage is forwarded unchanged: "
        "its cost is not reported and is left out of the totals."
    )
    return 0


def _fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 -- our loopback proxy
        data: dict[str, Any] = json.loads(response.read())
    return data
