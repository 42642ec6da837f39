"""A real WebSocket client (Python `websockets`) driven over stdin/stdout.

Connects to --url, optionally offering permessage-deflate, then:
  stdout: {"kind": "open", "extensions": "<Sec-WebSocket-Extensions reply or null>"}
          {"kind": "message", "text": "<frame text>"}         one per received message
          {"kind": "closed", "code": N, "reason": "..."}
  stdin:  one line = one text frame to send
"""

import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--compress", action="store_true")
    args = parser.parse_args()

    async with connect(
        args.url,
        compression="deflate" if args.compress else None,
        ping_interval=None,
        max_size=2**24,
        open_timeout=10,
    ) as ws:
        emit({"kind": "open", "extensions": ws.response.headers.get("Sec-WebSocket-Extensions")})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def forward_stdin() -> None:
            while line := await reader.readline():
                text = line.decode().rstrip("\n")
                if text:
                    await ws.send(text)
            await ws.close()

        sender = asyncio.create_task(forward_stdin())
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                emit({"kind": "message", "text": message})
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
        emit({"kind": "closed", "code": ws.close_code, "reason": ws.close_reason})


if __name__ == "__main__":
    asyncio.run(main())
