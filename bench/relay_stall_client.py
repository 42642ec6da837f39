"""A WebSocket subscriber for bench/relay-stall.sh.

--hold: subscribe and never read (the edge's slow-client policy drops for it; it only
keeps the channels subscribed). Otherwise read, and print one JSON line per second:
{"t": <unix s>, "count": <messages that second>, "max_lag_ms": <now - data.t>}.
Stops by itself after --seconds.
"""

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--channels", required=True)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    async with connect(args.url, ping_interval=None, max_size=2**24) as ws:
        for channel in args.channels.split(","):
            await ws.send(json.dumps({"method": "subscribe", "channel": channel}))
            reply = json.loads(await ws.recv())
            assert reply.get("type") == "subscribed", reply
        print(json.dumps({"subscribed": args.channels}), flush=True)
        if args.hold:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        count, max_lag, second = 0, 0, int(time.time())
        while time.monotonic() < deadline:
            try:
                text = await asyncio.wait_for(ws.recv(), timeout=1.0)
            except asyncio.TimeoutError:
                text = None
            now = time.time()
            if text is not None:
                message = json.loads(text)
                sent = message.get("data", {}).get("t")
                if sent is not None:
                    max_lag = max(max_lag, int(now * 1000) - int(sent))
                count += 1
            if int(now) != second:
                print(json.dumps({"t": second, "count": count, "max_lag_ms": max_lag}), flush=True)
                count, max_lag, second = 0, 0, int(now)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
