"""Publish a live ticker to pushfleet over ZeroMQ: a copyable example for backends.

    pip install pyzmq
    python3 ticker.py --bind tcp://127.0.0.1:5556 --rate 5 --channels ticker_INR,ticker_USD

Every message is a 3-frame multipart: [channel, event, data], all UTF-8, data being
JSON text that subscribers receive untouched. Edges connect to this socket and
subscribe to exactly the channels their clients hold.
"""

import argparse
import json
import random
import time

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="tcp://127.0.0.1:5556", help="endpoint edges connect to")
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per channel")
    parser.add_argument("--channels", default="ticker_INR,ticker_USD,ticker_EUR")
    parser.add_argument("--count", type=int, default=0, help="stop after this many rounds (0: run until stopped)")
    args = parser.parse_args()

    channels = [c for c in args.channels.split(",") if c]
    prices = {c: 100.0 + 10 * i for i, c in enumerate(channels)}
    sock = zmq.Context().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 10_000)  # drop rather than buffer without bound
    sock.bind(args.bind)
    print(f"ticker: publishing {len(channels)} channels at {args.rate}/s each on {args.bind}", flush=True)
    interval = 1.0 / args.rate
    rounds = 0
    next_at = time.monotonic()
    try:
        while args.count == 0 or rounds < args.count:
            for channel in channels:
                prices[channel] = round(max(1.0, prices[channel] * (1 + random.gauss(0, 0.002))), 4)
                data = {"price": prices[channel], "ts": time.time()}
                sock.send_multipart([channel.encode(), b"tick", json.dumps(data).encode()])
            rounds += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
