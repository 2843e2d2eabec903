"""``flexroute flex-status [--url URL] [--within D] [--json]``: each model's flex availability
as a running proxy sees it (``GET /flexroute/v1/flex``), as a table.

Exit status: 0 with the table printed; 1 when the proxy cannot be reached or refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flexroute.commands._common import key_from_file
from flexroute.table import render_table

__all__ = ["add_parser", "render"]

DEFAULT_URL = "http://127.0.0.1:8080"
COLUMNS = (
    ("provider", "provider", "l"),
    ("model", "model", "l"),
    ("state", "state", "l"),
    ("p_start", "p_start_within", "r"),
    ("observations", "observations", "r"),
    ("starts", "starts", "r"),
    ("refusals", "refusals", "r"),
    ("r0", "refused_first_share", "r"),
    ("r1", "refused_retry_share", "r"),
    ("cuts", "cuts", "r"),
    ("tail_s", "start_tail_s", "r"),
    ("refusing_s", "refusing_for_s", "r"),
    ("probes", "probes", "r"),
    ("skipped", "skipped", "r"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "flex-status",
        help="each model's flex availability estimate, from a running proxy",
        description="Print each model's flex availability as a running `flexroute serve` "
        "estimates it: P(flex starts within --within), the observations behind it, its state "
        "(unknown, available, predicted-down, refusing) and the probes made.",
    )
    status.add_argument(
        "--url", default=DEFAULT_URL, metavar="URL",
        help=f"the proxy's base URL (default {DEFAULT_URL})",
    )  # fmt: skip
    status.add_argument(
        "--within", default="1s", metavar="DURATION",
        help='the wait the probability is for, e.g. "500ms", "2s" (default 1s)',
    )  # fmt: skip
    status.add_argument(
        "--key-file", type=Path, metavar="FILE",
        help="a file holding a flexroute key, for a gateway (default: none, sidecar mode)",
    )  # fmt: skip
    status.add_argument(
        "--json", action="store_true", help="print the JSON as served (default: a table)"
    )
    status.set_defaults(run=_run)


def render(status: dict[str, Any]) -> str:
    """The table ``flexroute flex-status`` prints for a ``GET /flexroute/v1/flex`` body."""
    models = status.get("models") or []
    head = f"flex mode {status.get('mode')}"
    if "threshold" in status:
        head += f", skip below p={status['threshold']}, half-life {status['half_life_s']}s"
    if not models:
        return head + "\nno flex attempts seen yet"
    rows = [[_cell(m.get(key)) for _, key, _ in COLUMNS] for m in models]
    align = "".join(a for _, _, a in COLUMNS)
    return head + "\n" + render_table([name for name, _, _ in COLUMNS], rows, align=align)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _run(args: argparse.Namespace) -> int:
    url = f"{args.url.rstrip('/')}/flexroute/v1/flex?" + urllib.parse.urlencode(
        {"within": args.within}
    )
    request = urllib.request.Request(url)  # noqa: S310 -- the operator's URL
    key = key_from_file(args.key_file)
    if key is not None:  # unredirected: a redirect elsewhere never gets the key
        request.add_unredirected_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status = json.loads(response.read())
    except urllib.error.HTTPError as error:
        print(f"flexroute: {url} answered {error.code}: {error.read()[:300]!r}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"flexroute: cannot reach {args.url} ({error}); is `flexroute serve` running "
              "there? (--url)", file=sys.stderr)  # fmt: skip
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
