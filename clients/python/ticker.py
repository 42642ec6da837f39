"""Publish a live ticker to pushfleet relays over ZeroMQ: the local fleet's demo
publisher, and a copyable example of a long-running Python backend.

    pip install pyzmq
    python3 ticker.py --relay tcp://127.0.0.1:5560 --relay tcp://127.0.0.1:5570 \\
        --channels ticker_INR,ticker_USD --rate 4

Each tick goes, through `pushfleet_publish.Publisher` (next to this file), to the
relay that owns its channel, as `[channel, "tick", data]` with data like
`{"symbol":"INR","price":83.1234,"change":-0.0123,"n":42,"t":1763790000000,
"bids":[{"price":83.1134,"size":120},…],"asks":[…]}`: `pushfleet-publish ticker`'s
fields plus five levels of a made-up order book each side, which makes a message of
about 450 bytes that permessage-deflate shrinks to about 45% (the keys repeat). A full relay queue drops the tick
and counts it; the ticker never blocks. Stops on Ctrl-C or SIGTERM, or after
`--duration` seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pushfleet_publish import BusyError, Publisher  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--relay",
        action="append",
        required=True,
        help="a relay's publish endpoint (repeat for each relay)",
    )
    parser.add_argument("--channels", default="ticker_INR,ticker_USD,ticker_EUR,ticker_JPY")
    parser.add_argument("--rate", type=float, default=4.0, help="ticks per second per channel")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0: run until stopped)")
    args = parser.parse_args()
    if args.rate <= 0 or args.rate > 10_000:
        parser.error("--rate must be in (0, 10000]")

    channels = [c for c in args.channels.split(",") if c]
    prices = {c: 50.0 + random.random() * 100.0 for c in channels}
    counts = {c: 0 for c in channels}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sent = busy = 0
    with Publisher(args.relay) as publisher:
        missing = publisher.wait_connected(timeout=5.0)
        if missing:
            print(f"ticker: not connected yet to {missing}; ticks queue until they are", flush=True)
        print(
            f"ticker: {len(channels)} channels at {args.rate}/s each to {len(args.relay)} relay(s)",
            flush=True,
        )
        interval = 1.0 / args.rate
        started = next_at = time.monotonic()
        while not stopping and (args.duration <= 0 or time.monotonic() - started < args.duration):
            for channel in channels:
                change = (random.random() - 0.5) * prices[channel] * 0.002
                prices[channel] = max(0.01, prices[channel] + change)
                counts[channel] += 1
                price = prices[channel]
                step = price * 0.0005
                data = json.dumps(
                    {
                        "symbol": channel.rsplit("_", 1)[-1],
                        "price": round(price, 4),
                        "change": round(change, 4),
                        "n": counts[channel],
                        "t": int(time.time() * 1000),
                        "bids": [
                            {"price": round(price - (i + 1) * step, 4), "size": random.randint(1, 500)}
                            for i in range(5)
                        ],
                        "asks": [
                            {"price": round(price + (i + 1) * step, 4), "size": random.randint(1, 500)}
                            for i in range(5)
                        ],
                    },
                    separators=(",", ":"),
                )
                try:
                    publisher.publish(channel, "tick", data)
                    sent += 1
                except BusyError:
                    busy += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    print(f"ticker: stopped after {sent} ticks ({busy} dropped, relay queue full)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
