"""``flexroute batch INPUT.jsonl -o OUTPUT.jsonl``: the command line of :mod:`flexroute.batch`.

Exit status: 0 when every line was answered (provider errors included: they are output lines,
as in the Batch API's files); 1 when some input lines were bad or got no HTTP answer (each is
reported on stderr with its line number); 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flexroute.commands._common import key_from_file
from flexroute.errors import ConfigError, RequestRejected

__all__ = ["add_parser"]

DEFAULT_START_WITHIN = 60.0  # seconds: a batch waits for flex longer than a chat turn would


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="run a Batch API input file (OpenAI or Gemini JSONL) flex-first, in minutes",
        description="Run an OpenAI Batch API or Gemini batch input file through flexroute's "
        "engine: flex first within --start-within, standard when flex will not start.",
    )
    batch.add_argument(
        "input", type=Path, metavar="INPUT.jsonl", help="OpenAI or Gemini Batch API input lines"
    )
    batch.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTPUT.jsonl",
        help="output lines in the Batch API's format, appended as each line finishes",
    )  # fmt: skip
    batch.add_argument(
        "--start-within", metavar="DURATION",
        help="flex budget of each line without its own (default FLEXROUTE_DEFAULT_START_WITHIN, "
        'else 60s; "off": none, lines go as written)',
    )  # fmt: skip
    batch.add_argument(
        "--concurrency", type=_positive_int, default=32, metavar="N",
        help="lines in flight at once (default 32)",
    )  # fmt: skip
    batch.add_argument("--rpm", type=_positive_float, metavar="N", help="at most N starts a minute")
    batch.add_argument(
        "--resume", action="store_true",
        help="continue into an existing OUTPUT: lines already written are not sent again",
    )  # fmt: skip
    batch.add_argument("--via", metavar="URL", help="send to a running `flexroute serve` instead")
    batch.add_argument("--model", help="Gemini lines without request.model use this model")
    batch.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'",
        help="an extra request header for every line (repeatable)",
    )  # fmt: skip
    batch.add_argument(
        "--key-file", type=Path, metavar="FILE",
        help="a file holding the API key: a flexroute key in gateway mode, or the key --via "
        "sends (default: the provider key of the environment)",
    )  # fmt: skip
    batch.add_argument("--max-retries", type=int, default=5, metavar="N",
                       help="resends of a line answered 429/5xx (5)")  # fmt: skip
    batch.add_argument("--json-summary", action="store_true", help="print the summary as JSON")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from flexroute.batch import BatchOptions, run_batch
    from flexroute.config_file import load_settings
    from flexroute.duration import parse_start_within

    settings = load_settings()
    start_within: float | None = settings.default_start_within or DEFAULT_START_WITHIN
    if args.start_within is not None and args.start_within.strip().lower() == "off":
        start_within = None
    elif args.start_within is not None:
        try:
            start_within = parse_start_within(args.start_within, field="--start-within")
        except RequestRejected as error:
            raise ConfigError(error.message) from None
    options = BatchOptions(
        input=args.input,
        output=args.output,
        start_within=start_within,
        concurrency=args.concurrency,
        rpm=args.rpm,
        resume=args.resume,
        via=args.via,
        model=args.model,
        headers=tuple(_header(h) for h in args.header or ()),
        key=key_from_file(args.key_file),
        max_retries=max(0, args.max_retries),
        progress=False if args.no_progress else None,
    )
    try:
        tally = anyio.run(run_batch, options, settings)
    except KeyboardInterrupt:
        print(f"flexroute batch: interrupted; the lines in {args.output} are kept: run again "
              "with --resume to finish", file=sys.stderr)  # fmt: skip
        return 130
    if args.json_summary:
        print(json.dumps(tally.to_json(), indent=2))
    else:
        print(tally.table())
    return 1 if tally.bad_lines or tally.no_answer else 0


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"--header {text!r}: write it as 'NAME: VALUE'")
    return name.strip().lower(), value.strip()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value
