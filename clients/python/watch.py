"""Watch pushfleet channels from a terminal: subscribe and print what arrives.

    pip install websockets
    python3 watch.py --url ws://127.0.0.1:8080/ws ticker_INR ticker_USD
"""

import argparse
import asyncio
import json

from websockets.asyncio.client import connect


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    parser.add_argument("channels", nargs="+")
    args = parser.parse_args()
    async with connect(args.url, compression="deflate") as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        print(f"watch: connected to {args.url} (extensions: {ext})", flush=True)
        for i, channel in enumerate(args.channels):
            await ws.send(json.dumps({"method": "subscribe", "channel": channel, "id": i}))
        seen = 0
        async for raw in ws:
            message = json.loads(raw)
            if "type" in message:
                print(f"watch: {message}", flush=True)
                continue
            tag = " (snapshot)" if message.get("snapshot") else ""
            print(f"{message['channel']:>12} #{message['seq']:<6} {json.dumps(message['data'])}{tag}", flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break


if __name__ == "__main__":
    asyncio.run(main())
