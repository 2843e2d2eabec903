"""Change the base URL, break nothing: what real users write and real SDKs send goes through
the proxy and the wrapper exactly as it would go to the provider (issue 10, items 1–4, 9,
11–14, 20)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from google import genai
from google.genai import types

import flexroute
from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.conftest import Proxy, attempts, make_settings
from tests.recording_upstream import Answer, Seen, recording_upstream
from tests.test_billing import _past_due

HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def serve(tmp_path: Path, emulator: Any) -> Iterator[Any]:
    """Start proxies with settings of the test's choosing; each stops with the test."""
    emulator.reset()
    stack: list[Any] = []

    def start(**overrides: Any) -> Proxy:
        settings = make_settings(tmp_path, emulator.base_url, **overrides)
        context = serve_in_thread(create_app(settings))
        stack.append(context)
        return Proxy(context.__enter__(), settings)

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def fetch(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(  # noqa: S310 -- loopback test server
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class TestBaseUrls:
    @pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
    def test_openai_upstream_with_or_without_its_version(
        self, serve: Any, emulator: Any, suffix: str
    ) -> None:
        """FLEXROUTE_OPENAI_BASE_URL=https://…/v1 is the form users write: no /v1/v1."""
        proxy = serve(openai_base_url=emulator.base_url + suffix)
        reply = proxy.client().chat.completions.create(model="gpt-5-mini", messages=HI)
        assert reply.choices[0].message.content

    @pytest.mark.parametrize("suffix", ["", "/v1beta", "/v1"])
    def test_gemini_upstream_with_or_without_its_version(
        self, serve: Any, emulator: Any, suffix: str
    ) -> None:
        """The request's own /v1beta or /v1 path is kept, whatever the base URL carries."""
        proxy = serve(gemini_base_url=emulator.base_url + suffix)
        client = genai.Client(api_key="g-test", http_options=types.HttpOptions(base_url=proxy.url))
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        assert reply.text

    @pytest.mark.parametrize("suffix", ["", "/v1"])
    def test_anthropic_upstream_with_or_without_its_version(
        self, serve: Any, emulator: Any, suffix: str
    ) -> None:
        """Claude through the proxy with either form of the base URL."""
        proxy = serve(anthropic_base_url=emulator.base_url + suffix)
        client = anthropic.Anthropic(api_key="a-test", base_url=proxy.url, max_retries=0)
        message = client.messages.create(model="claude-opus-5", max_tokens=20, messages=HI)
        assert message.content

    def test_a_path_prefix_before_the_version_is_kept(self, serve: Any) -> None:
        """Azure's …/openai/v1 form: the prefix stays, the version comes from the request."""
        with recording_upstream() as upstream:
            proxy = serve(openai_base_url=f"{upstream.url}/openai/v1")
            status, _, _ = fetch(f"{proxy.url}/v1/embeddings", b'{"model":"m","input":"x"}')
        assert status == 200
        assert [seen.raw_path for seen in upstream.seen] == ["/openai/v1/embeddings"]

    def test_the_documented_defaults_are_the_conventional_forms(self) -> None:
        """The defaults are the URLs the providers' own SDKs use."""
        fields = Settings.model_fields
        assert fields["openai_base_url"].default == "https://api.openai.com/v1"
        assert fields["gemini_base_url"].default == "https://generativelanguage.googleapis.com"
        assert fields["anthropic_base_url"].default == "https://api.anthropic.com"

    def test_serve_says_where_each_provider_goes(self) -> None:
        """The start-up lines name each upstream URL, so a wrong base URL shows at once."""
        settings = Settings(openai_base_url="http://127.0.0.1:9/v1/")
        lines = list(flexroute.providers.upstream_lines(settings))
        assert lines[-1] == (
            "upstream openai: http://127.0.0.1:9/v1/… (FLEXROUTE_OPENAI_BASE_URL=http://127.0.0.1:9/v1)"
        )
        assert lines[0].startswith(
            "upstream gemini: https://generativelanguage.googleapis.com/v1beta/"
        )

    @pytest.mark.parametrize("suffix", ["", "/v1"])
    def test_the_wrapper_uses_the_upstream_setting_in_either_form(
        self, tmp_path: Path, emulator: Any, suffix: str
    ) -> None:
        """A wrapped client on the public URL goes to FLEXROUTE_OPENAI_BASE_URL, /v1 or not."""
        emulator.reset()
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
            openai_base_url=emulator.base_url + suffix,
        )
        client = flexroute.wrap(
            openai.OpenAI(api_key="sk-test", max_retries=0), start_within="5s", settings=settings
        )
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-5-mini", messages=HI)
        finally:
            client.close()
        assert raw.headers["x-flexroute-route"] == "flex"
        [entry] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert entry["path"] == "/v1/chat/completions"


class TestProviders:
    @pytest.mark.parametrize(
        ("path", "headers", "query", "provider"),
        [
            ("/v1/chat/completions", {"authorization"}, "", "openai"),
            ("/v1/models", {"authorization"}, "", "openai"),
            ("/v1/models/ft:gpt-4o-mini:acme::abc123", {"authorization"}, "", "openai"),
            ("/v1/models/ft:gpt-4o-mini:acme::abc123", set(), "", "openai"),
            ("/v1/fine_tuning/jobs", {"authorization"}, "", "openai"),
            ("/v1/models", {"x-api-key", "anthropic-version"}, "", "anthropic"),
            ("/v1/messages/count_tokens", set(), "", "anthropic"),
            ("/v1/messages", {"authorization"}, "", "anthropic"),
            ("/v1beta/models", set(), "key=k", "gemini"),
            ("/v1/models", set(), "key=k", "gemini"),
            ("/v1/models/gemini-2.5-pro:countTokens", {"authorization"}, "", "gemini"),
            ("/v1/models/gemini-2.5-pro:generateContent", set(), "", "gemini"),
            ("/upload/v1beta/files", set(), "", "gemini"),
        ],
    )
    def test_whose_api_a_path_is(
        self, path: str, headers: set[str], query: str, provider: str
    ) -> None:
        """By endpoint shape first, then by the headers only one provider's SDKs send."""
        assert flexroute.providers.provider_for(path, headers, query).name == provider

    def test_only_model_calls_are_routed(self) -> None:
        """Other paths, and other methods on routed paths, are forwarded."""
        reg = flexroute.providers
        assert reg.GEMINI.dialect_for("POST", "/v1beta/models/m:streamGenerateContent")
        assert reg.ANTHROPIC.dialect_for("POST", "/v1/messages")
        assert reg.ANTHROPIC.dialect_for("GET", "/v1/messages") is None
        assert reg.OPENAI.dialect_for("POST", "/v1/embeddings") is None
        assert reg.OPENAI.dialect_for("POST", "/v1/responses")

    def test_each_provider_names_its_price_file(self) -> None:
        """The registry's catalog file exists and prices that provider's models."""
        from flexroute.catalog import default_catalog

        root = Path(__file__).parent.parent / "pricing"
        priced = {prices.provider for prices in default_catalog().models()}
        for provider in flexroute.providers.PROVIDERS:
            assert (root / provider.catalog_file).is_file(), provider.name
            assert provider.name in priced

    def test_a_key_never_reaches_another_providers_host(self, serve: Any) -> None:
        """Each client's key goes to its own provider's host only, fine-tuned paths too."""
        keys = {"openai": "sk-canary-openai", "gemini": "g-canary", "anthropic": "a-canary"}
        with (
            recording_upstream() as oai,
            recording_upstream() as gem,
            recording_upstream() as ant,
        ):
            proxy = serve(openai_base_url=oai.url, gemini_base_url=gem.url,
                          anthropic_base_url=ant.url)  # fmt: skip
            fetch(f"{proxy.url}/v1/models/ft:gpt-4o-mini:acme::abc123",
                  headers={"authorization": f"Bearer {keys['openai']}"})  # fmt: skip
            fetch(f"{proxy.url}/v1/chat/completions", b'{"model":"gpt-5-mini","messages":[]}',
                  {"authorization": f"Bearer {keys['openai']}"})  # fmt: skip
            fetch(f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent", b"{}",
                  {"x-goog-api-key": keys["gemini"]})  # fmt: skip
            fetch(f"{proxy.url}/v1/messages", b'{"model":"claude-opus-5"}',
                  {"x-api-key": keys["anthropic"], "anthropic-version": "2023-06-01"})  # fmt: skip
        for name, upstream in (("openai", oai), ("gemini", gem), ("anthropic", ant)):
            assert upstream.seen, name
            for seen in upstream.seen:
                text = json.dumps([seen.headers, seen.query, seen.raw_path])
                for other, key in keys.items():
                    assert (key in text) == (other == name), (name, other)


class TestRequestsAsSent:
    def test_an_encoded_question_mark_stays_in_the_path(self, serve: Any) -> None:
        """%3F and %23 are forwarded as written: they never become a query or a fragment."""
        with recording_upstream() as upstream:
            proxy = serve(gemini_base_url=upstream.url, openai_base_url=upstream.url)
            fetch(f"{proxy.url}/v1beta/models/gemini-2.5-flash%3Fkey=smuggled:generateContent",
                  b"{}", {"x-goog-api-key": "g-1"})  # fmt: skip
            fetch(f"{proxy.url}/v1/files/file%23abc%3Fkey=smuggled/content")
        routed, forwarded = upstream.seen
        assert (routed.query, forwarded.query) == ("", "")
        assert routed.raw_path == "/v1beta/models/gemini-2.5-flash%3Fkey=smuggled:generateContent"
        assert forwarded.raw_path == "/v1/files/file%23abc%3Fkey=smuggled/content"

    def test_start_within_never_reaches_a_forwarded_endpoint(self, serve: Any) -> None:
        """An embeddings call carrying start_within (body or header) arrives without it."""
        with recording_upstream() as upstream:
            proxy = serve(openai_base_url=upstream.url)
            body = {"model": "text-embedding-3-small", "input": "x", "start_within": "5s"}
            status, _, _ = fetch(f"{proxy.url}/v1/embeddings", json.dumps(body).encode(),
                                 {"x-flex-start-within": "5s"})  # fmt: skip
        assert status == 200
        [seen] = upstream.seen
        assert seen.json() == {"model": "text-embedding-3-small", "input": "x"}
        assert not seen.header_values("x-flex-start-within")

    def test_a_background_response_is_passed_through(self, serve: Any) -> None:
        """background: true is a job, not a wait: sent as written (no stream, no tier)."""
        queued = json.dumps({"id": "resp_1", "object": "response", "status": "queued"})
        with recording_upstream(lambda seen: Answer(body=queued.encode())) as upstream:
            proxy = serve(openai_base_url=upstream.url)
            client = proxy.client()
            raw = client.responses.with_raw_response.create(
                model="gpt-5-mini", input="hi", background=True,
                extra_body={"start_within": "30s"},
            )  # fmt: skip
        assert raw.parse().status == "queued"
        assert raw.headers["x-flexroute-route"] == "passthrough"
        assert raw.headers["x-flexroute-reason"] == "background-request"
        [seen] = upstream.seen
        assert seen.json() == {"model": "gpt-5-mini", "input": "hi", "background": True}


def sse_stream(seen: Seen) -> Answer:
    event = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"},
                             "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}  # fmt: skip
    return Answer(
        body=f"data: {json.dumps(event)}\r\n\r\n".encode(), content_type="text/event-stream"
    )


class TestGeminiServerTimeout:
    @pytest.mark.parametrize(("client", "sent"), [("900", "30"), ("5", "5"), (None, "30")])
    def test_exactly_one_server_timeout_the_smaller(
        self, serve: Any, client: str | None, sent: str
    ) -> None:
        """The SDK's X-Server-Timeout and the flex budget merge into one header."""
        with recording_upstream(sse_stream) as upstream:
            proxy = serve(gemini_base_url=upstream.url)
            headers = {"x-goog-api-key": "g-1", "x-flex-start-within": "30s"}
            if client is not None:
                headers["x-server-timeout"] = client
            status, _, _ = fetch(
                f"{proxy.url}/v1beta/models/gemini-2.5-flash:generateContent",
                b'{"contents":[{"parts":[{"text":"hi"}]}]}',
                headers,
            )
        assert status == 200
        assert upstream.seen[0].header_values("x-server-timeout") == [sent]


class TestRetries:
    def test_an_unreachable_provider_is_retried_by_the_sdk(self, serve: Any) -> None:
        """502 upstream_unreachable says x-should-retry: true, so the SDK retries as it would
        a dropped connection to the provider."""
        proxy = serve(openai_base_url=closed_port_url())
        sent: list[httpx2.Request] = []
        http = httpx2.Client(event_hooks={"request": [sent.append]})
        client = openai.OpenAI(api_key="sk-1", base_url=f"{proxy.url}/v1", max_retries=2,
                               http_client=http)  # fmt: skip
        with pytest.raises(openai.InternalServerError) as raised:
            client.with_options(timeout=20).chat.completions.create(model="gpt-5-mini", messages=HI)
        assert raised.value.status_code == 502
        assert raised.value.response.headers["x-should-retry"] == "true"
        assert len(sent) == 3

    def test_a_request_flexroute_refuses_is_not_retried(self, proxy: Proxy) -> None:
        """A 400 of flexroute's own says x-should-retry: false: it would fail again."""
        sent: list[httpx2.Request] = []
        http = httpx2.Client(event_hooks={"request": [sent.append]})
        client = openai.OpenAI(api_key="sk-1", base_url=f"{proxy.url}/v1", max_retries=2,
                               http_client=http)  # fmt: skip
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="gpt-5-mini", messages=HI,
                                           extra_body={"start_within": "forever"})  # fmt: skip
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert len(sent) == 1

    def test_an_sdk_retry_goes_straight_to_standard(self, proxy: Proxy, emulator: Any) -> None:
        """A client whose timeout is shorter than start_within gets its answer on the retry:
        the retry (x-stainless-retry-count 1) skips flex, reason sdk-retry."""
        client = openai.OpenAI(api_key="sk-1", base_url=f"{proxy.url}/v1", max_retries=1,
                               timeout=1.0)  # fmt: skip
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=HI, extra_body={"start_within": "20s"},
            extra_headers={"x-emulator": "flex_queue=5"},
        )  # fmt: skip
        assert raw.headers["x-flexroute-route"] == "passthrough"
        assert raw.headers["x-flexroute-reason"] == "sdk-retry"
        [entry] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert entry["tier_requested"] == "default"


class TestClientGone:
    def test_a_client_that_leaves_during_the_flex_wait(self, proxy: Proxy, emulator: Any) -> None:
        """Recorded as what happened: route flex, status client_closed, no fee."""
        client = proxy.client(timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="gpt-5-mini",
                messages=HI,
                extra_body={"start_within": "20s"},
                extra_headers={"x-emulator": "flex_queue=5"},
            )
        deadline = time.monotonic() + 10
        while not (log := emulator.log()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        request_id = log[0]["client_request_id"]
        record = None
        while record is None:
            try:
                record = proxy.record(request_id)
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline, "no record for the abandoned request"
                time.sleep(0.05)
        assert (record["route"], record["status"]) == ("flex", "client_closed")
        assert record["fee_usd"] == "0.000000000"
        [attempt] = record["attempt_log"]
        assert attempt["outcome"] == "client-closed"  # not the deadline's doing
        assert attempt["billed"] == "unknown"  # the provider had accepted it (HTTP 200)


def cut_body(seen: Seen) -> Answer:
    if seen.raw_path.endswith("/events"):
        return Answer(chunks=[b'data: {"n":1}\n\n'], content_type="text/event-stream", cut=True)
    return Answer(chunks=[b'{"object":"list","data":[{"embedding":[0.1,'], cut=True)


class TestBrokenForwards:
    def test_a_cut_body_is_never_a_clean_success(self, serve: Any) -> None:
        """A forwarded JSON body that breaks off reaches the SDK as a broken connection."""
        with recording_upstream(cut_body) as upstream:
            proxy = serve(openai_base_url=upstream.url)
            with pytest.raises(openai.APIConnectionError):
                proxy.client().embeddings.create(model="text-embedding-3-small", input="x")

    def test_a_cut_event_stream_ends_with_an_error_event(self, serve: Any) -> None:
        """A forwarded event stream that breaks off ends with an in-band error."""
        with recording_upstream(cut_body) as upstream:
            proxy = serve(openai_base_url=upstream.url)
            status, _, body = fetch(f"{proxy.url}/v1/fine_tuning/jobs/j/events")
        assert status == 200
        assert body.startswith(b'data: {"n":1}')
        assert b"upstream_stream_broken" in body

    def test_the_wrapper_raises_the_sdks_connection_error(self, tmp_path: Path) -> None:
        """Through wrap(), the same cut body raises openai's APIConnectionError."""
        with recording_upstream(cut_body) as upstream:
            settings = Settings(database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}")
            bare = openai.OpenAI(api_key="sk-1", base_url=f"{upstream.url}/v1", max_retries=0)
            client = flexroute.wrap(bare, settings=settings)
            try:
                with pytest.raises(openai.APIConnectionError):
                    client.embeddings.create(model="text-embedding-3-small", input="x")
            finally:
                client.close()


class TestOneEngine:
    def test_a_wrapped_client_gets_the_402_too(self, tmp_path: Path, emulator: Any) -> None:
        """The wrapper is built by the same composition root as the proxy: billing gate
        included, so a past-due organisation's billable flex call raises 402 there too."""
        emulator.reset()
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        anyio.run(_past_due, url)
        bare = openai.OpenAI(api_key="sk-1", base_url=f"{emulator.base_url}/v1", max_retries=0)
        client = flexroute.wrap(bare, start_within="5s", settings=Settings(database_url=url))
        try:
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="gpt-5-mini", messages=HI)
            assert raised.value.status_code == 402
            reply = client.chat.completions.create(
                model="gpt-5-mini", messages=HI, extra_body={"start_within": None}
            )
            assert reply.choices[0].message.content
        finally:
            client.close()


# A script per SDK: its sync client wrapped, one call, and never close().
EXIT_SCRIPTS = {
    "openai": (
        "bare = openai.OpenAI(api_key='sk-1', base_url=BASE + '/v1')\n"
        "client = flexroute.wrap(bare, start_within=BUDGET, settings=settings)\n"
        "reply = client.chat.completions.create(model='gpt-5-mini', extra_headers=HEADERS,\n"
        "    messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(reply.choices[0].message.content is not None)\n"
    ),
    "anthropic": (
        "bare = anthropic.Anthropic(api_key='sk-ant-1', base_url=BASE)\n"
        "client = flexroute.wrap(bare, settings=settings)\n"
        "reply = client.messages.create(model='claude-sonnet-4-5', max_tokens=32,\n"
        "    extra_headers=HEADERS, messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(bool(reply.content))\n"
    ),
    "google-genai": (
        "options = types.HttpOptions(base_url=BASE, api_version='v1beta', headers=HEADERS)\n"
        "bare = genai.Client(api_key='g-1', http_options=options)\n"
        "client = flexroute.wrap(bare, start_within=BUDGET, settings=settings)\n"
        "reply = client.models.generate_content(model='gemini-2.5-flash', contents='hi')\n"
        "print(reply.text is not None)\n"
    ),
}


def exit_script(tmp_path: Path, sdk: str, base: str, headers: dict[str, str], budget: str) -> Path:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, openai, anthropic, flexroute\n"
        "from google import genai\n"
        "from google.genai import types\n"
        "from flexroute import Settings\n"
        f"settings = Settings(database_url='sqlite:///{tmp_path / 'l.sqlite3'}')\n"
        f"BASE, HEADERS, BUDGET = {base!r}, {headers!r}, {budget!r}\n"
        "print('asking', flush=True)\n" + EXIT_SCRIPTS[sdk]
    )
    return script


class TestExit:
    @pytest.mark.parametrize("sdk", sorted(EXIT_SCRIPTS))
    def test_a_script_that_never_closes_its_wrapped_client_exits(
        self, tmp_path: Path, emulator: Any, sdk: str
    ) -> None:
        """The sync wrapper's loop thread never keeps the interpreter alive, for each SDK
        (google-genai's client closes itself in ``__del__`` at exit: that hung), and its
        provider connections are closed on the way out (no aiohttp "Unclosed" warnings)."""
        script = exit_script(tmp_path, sdk, emulator.base_url, {}, "5s")
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["asking", "True"]
        assert "Unclosed" not in done.stderr, done.stderr

    @pytest.mark.parametrize("sdk", sorted(EXIT_SCRIPTS))
    def test_one_ctrl_c_stops_a_script_waiting_on_a_wrapped_call(
        self, tmp_path: Path, emulator: Any, sdk: str
    ) -> None:
        """SIGINT while a wrapped call waits on the provider ends the script at once, with the
        usual KeyboardInterrupt."""
        headers = {"x-emulator": "flex_queue=120;standard_queue=120"}
        script = exit_script(tmp_path, sdk, emulator.base_url, headers, "10m")
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"asking"
            time.sleep(2.0)  # the call is now waiting on the provider
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode != 0
        assert b"KeyboardInterrupt" in err, err[-2000:]


def slow(seen: Seen) -> Answer:
    """Headers late for /v1/chat/completions and /v1/embeddings; a stream that stalls."""
    if seen.json().get("stream") and "slow_headers" not in seen.raw_path:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
        }
        return Answer(chunks=[f"data: {json.dumps(chunk)}\n\n".encode()],
                      content_type="text/event-stream", stall=30)  # fmt: skip
    return Answer(delay=30)


class TestBounds:
    """A silent or stalled provider is bounded by FLEXROUTE_UPSTREAM_*_TIMEOUT (issue 11.6)."""

    def test_no_headers_in_time_is_a_504_and_a_record(self, serve: Any) -> None:
        """Passthrough whose provider never answers: 504 upstream_timeout, retryable."""
        with recording_upstream(slow) as upstream:
            proxy = serve(openai_base_url=upstream.url, upstream_headers_timeout=0.5)
            began = time.monotonic()
            with pytest.raises(openai.APIStatusError) as raised:
                proxy.client().chat.completions.create(model="gpt-5-mini", messages=HI)
            assert time.monotonic() - began < 10
            error = raised.value
            assert (error.status_code, error.code) == (504, "upstream_timeout")
            assert error.response.headers["x-should-retry"] == "true"
            record = proxy.record(error.response.headers["x-flexroute-request-id"])
            assert record["status"] == "upstream_timeout"

    def test_a_stream_that_stalls_ends_with_an_error(self, serve: Any) -> None:
        """A passthrough stream silent past the idle bound ends with an in-band error."""
        with recording_upstream(slow) as upstream:
            proxy = serve(openai_base_url=upstream.url, upstream_idle_timeout=0.5)
            stream = proxy.client().chat.completions.create(
                model="gpt-5-mini", messages=HI, stream=True
            )
            began = time.monotonic()
            with pytest.raises(openai.APIError, match="stalled"):
                for _ in stream:
                    pass
            assert time.monotonic() - began < 10

    def test_a_forwarded_call_without_headers_in_time(self, serve: Any) -> None:
        """Forwarded endpoints are bounded too."""
        with recording_upstream(slow) as upstream:
            proxy = serve(openai_base_url=upstream.url, upstream_headers_timeout=0.5)
            with pytest.raises(openai.APIStatusError) as raised:
                proxy.client().embeddings.create(model="text-embedding-3-small", input="x")
            assert raised.value.status_code == 504
