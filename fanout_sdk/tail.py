"""``python -m fanout_sdk.tail ws://host/ws CHANNEL``: print a channel's publications.

Like ``wscat``, but speaking ``fanout.v1``: it reconnects, subscribes again with ``since``
(on channels with history, so what was published meanwhile is printed once, in order),
and refreshes nothing (give a token that lives long enough, or none).

One line per publication on stdout: JSON data compact, text as it is, binary in base64
(``--binary hex`` for hex); with ``--offsets``, each line starts with ``OFFSET<TAB>``.
Connection changes and gaps go to stderr. Ctrl-C or SIGTERM ends it with status 0; a
refusal for good (bad token, forbidden channel) with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import Sequence

from fanout_sdk.client import Client, Gap, State, StateChange, Subscribed, SubscriptionEvent
from fanout_sdk.errors import ClientClosed, CommandError, SubscriptionEnded
from fanout_sdk.frames import Publication, StreamPosition


def format_publication(publication: Publication, binary: str = "base64") -> str:
    """One line for ``publication``: JSON compact, text as is, binary encoded."""
    if publication.kind == "json":
        return json.dumps(publication.data, separators=(",", ":"), ensure_ascii=False)
    if publication.kind == "text":
        return publication.text or ""
    payload = publication.binary or b""
    return payload.hex() if binary == "hex" else base64.b64encode(payload).decode()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fanout_sdk.tail",
        description="Print the publications of a Fanout channel, one per line.",
    )
    parser.add_argument("url", help="the server's fanout.v1 socket, e.g. ws://localhost:8000/ws")
    parser.add_argument("channel", help="the channel to tail")
    parser.add_argument(
        "--token",
        default=os.environ.get("FANOUT_TOKEN"),
        help="a connection token (default: $FANOUT_TOKEN; none: anonymous)",
    )
    parser.add_argument("--sub-token", help="a subscription token for the channel")
    parser.add_argument(
        "--since",
        type=StreamPosition.parse,
        metavar="OFFSET:EPOCH",
        help="start after this position of the channel's history",
    )
    parser.add_argument("--binary", choices=("base64", "hex"), default="base64")
    parser.add_argument("--offsets", action="store_true", help="prefix lines with the offset")
    parser.add_argument("--quiet", "-q", action="store_true", help="nothing on stderr")
    return parser


async def tail(args: argparse.Namespace) -> int:
    """Run until a signal (0) or a refusal for good (1)."""

    def note(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    def on_state(change: StateChange) -> None:
        if change.state is State.CONNECTED:
            note(f"connected to {args.url}")
        elif change.state is State.DISCONNECTED:
            when = f"; reconnecting in {change.reconnect_in:.1f}s" if change.reconnect_in else ""
            note(f"disconnected ({change.code}) {change.reason}{when}")

    def on_event(event: SubscriptionEvent) -> None:
        if isinstance(event, Gap):
            note(f"gap on {event.channel}: {event.reason}")
        elif isinstance(event, Subscribed):
            where = f" at {event.position}" if event.position else ""
            recovered = "" if event.recovered is None else f" (recovered: {event.recovered})"
            note(f"subscribed to {event.channel}{where}{recovered}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = Client(args.url, token=args.token, on_state=on_state)
    status = 0

    async def run() -> None:
        await client.connect()
        sub = await client.subscribe(
            args.channel, token=args.sub_token, since=args.since, on_event=on_event
        )
        async for publication in sub:
            line = format_publication(publication, args.binary)
            if args.offsets:
                line = f"{publication.offset if publication.offset is not None else ''}\t{line}"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    runner = asyncio.create_task(run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
        if runner.done() and not runner.cancelled():
            error = runner.exception()
            if isinstance(error, ClientClosed | CommandError | SubscriptionEnded):
                note(f"error: {error}")
                status = 1
            elif error is not None:
                raise error
    finally:
        for task in (runner, stopper):
            task.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        await client.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(tail(args))
    except BrokenPipeError:  # `| head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
