#!/usr/bin/env python3
"""One wave of long-lived WebSocket subscribers for bench/balance.sh.

    bench/balance_clients.py URL COUNT CHANNELS ARRIVAL HOLD [--label NAME]
                             [--ready-file PATH] [--max-inflight N]

Opens COUNT connections to URL (through HAProxy), spread evenly over ARRIVAL
seconds (0: as fast as --max-inflight handshakes in flight allow). Client i
subscribes to CHANNELS[i % len(CHANNELS)] (CHANNELS is comma-separated) and
then reads every message until the deadline: HOLD seconds after the last
arrival slot (start + ARRIVAL + HOLD), or SIGTERM/SIGINT, whichever comes
first. Then it closes every socket (bounded) and prints one JSON line:

    {"label":..,"connected":N,"failed":N,"messages":N,"closed_early":N,...}

`connected` counts clients whose subscribe was acknowledged; `failed` those that
never got there (after up to 3 attempts); `closed_early` those whose connection
ended before the deadline. `messages` counts published messages (frames without
a "type"), control replies are not counted. With --ready-file, the file gets
"connected failed" written once every client has either subscribed or failed.
Exit status: 0, or 1 if any client failed or closed early.
"""

import argparse
import asyncio
import json
import signal
import sys
import time

from websockets.asyncio.client import connect

ATTEMPTS = 3
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class Wave:
    def __init__(self, args):
        self.args = args
        self.channels = [c for c in args.channels.split(",") if c]
        self.connected = 0
        self.failed = 0
        self.closed_early = 0
        self.messages = 0
        self.per_client = [0] * args.count
        self.errors = {}
        self.stop = asyncio.Event()
        self.settled = 0  # subscribed or failed
        self.all_settled = asyncio.Event()
        self.inflight = asyncio.Semaphore(args.max_inflight)

    def error(self, e):
        key = type(e).__name__ + ": " + str(e)[:120]
        self.errors[key] = self.errors.get(key, 0) + 1

    def settle(self):
        self.settled += 1
        if self.settled == self.args.count:
            self.all_settled.set()

    async def subscribe(self, i):
        """Connects and subscribes; returns the open connection or None."""
        channel = self.channels[i % len(self.channels)]
        request = json.dumps({"method": "subscribe", "channel": channel, "id": i})
        for attempt in range(ATTEMPTS):
            if self.stop.is_set():
                return None
            ws = None
            try:
                async with self.inflight:
                    ws = await asyncio.wait_for(
                        connect(
                            self.args.url,
                            ping_interval=None,  # the edge pings; the library pongs
                            compression=None,  # keep the reader cheap
                            max_queue=256,
                            close_timeout=CLOSE_TIMEOUT,
                            open_timeout=HANDSHAKE_TIMEOUT,
                        ),
                        HANDSHAKE_TIMEOUT + 1,
                    )
                    await ws.send(request)
                    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
                    while True:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError("no subscribe ack")
                        frame = await asyncio.wait_for(ws.recv(), left)
                        if frame.startswith('{"type"'):
                            reply = json.loads(frame)
                            if reply.get("type") == "subscribed":
                                return ws
                            raise RuntimeError("reply " + frame[:100])
                        # a published message (e.g. a snapshot) before the ack
                        self.messages += 1
                        self.per_client[i] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                self.error(e)
                if ws is not None:
                    try:
                        await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
                    except Exception:  # noqa: BLE001
                        pass
                if attempt + 1 < ATTEMPTS:
                    await asyncio.sleep(0.2 * (attempt + 1))
        return None

    async def client(self, i, start_at):
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ws = await self.subscribe(i)
        if ws is None:
            self.failed += 1
            self.settle()
            return
        self.connected += 1
        self.settle()
        # Reads until the connection ends or run() cancels this task at the
        # deadline (cancelling recv() is safe in websockets' asyncio client).
        try:
            while True:
                frame = await ws.recv()
                if isinstance(frame, str) and frame.startswith('{"type"'):
                    continue  # control replies (reconnect, error) are not messages
                self.messages += 1
                self.per_client[i] += 1
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - counted and reported
            self.closed_early += 1
            self.error(e)
        finally:
            try:
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
            except BaseException:  # noqa: BLE001
                pass

    async def ready_file(self):
        await self.all_settled.wait()
        if self.args.ready_file:
            with open(self.args.ready_file, "w") as f:
                f.write(f"{self.connected} {self.failed}\n")

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        n, arrival = self.args.count, self.args.arrival
        t0 = time.monotonic()
        deadline = t0 + arrival + self.args.hold
        step = arrival / n if n else 0.0
        watcher = asyncio.ensure_future(self.ready_file())
        tasks = [asyncio.ensure_future(self.client(i, t0 + i * step)) for i in range(n)]
        if n == 0:
            self.all_settled.set()
        try:
            await asyncio.wait_for(self.stop.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        # Deadline or signal: every client stops reading and closes its socket.
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT + 3)
            if pending:
                self.errors[f"{len(pending)} clients did not close in time"] = len(pending)
        if not watcher.done():
            watcher.cancel()
        counts = sorted(self.per_client)
        summary = {
            "label": self.args.label,
            "url": self.args.url,
            "count": n,
            "connected": self.connected,
            "failed": self.failed,
            "closed_early": self.closed_early,
            "messages": self.messages,
            "per_client_min": counts[0] if counts else 0,
            "per_client_median": counts[len(counts) // 2] if counts else 0,
            "per_client_max": counts[-1] if counts else 0,
            "seconds": round(time.monotonic() - t0, 1),
            "stopped_by_signal": self.stop.is_set(),
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:5]),
        }
        print(json.dumps(summary), flush=True)
        return 1 if self.failed or self.closed_early else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("count", type=int)
    p.add_argument("channels")
    p.add_argument("arrival", type=float, help="seconds to spread the arrivals over")
    p.add_argument("hold", type=float, help="seconds to stay connected after ARRIVAL")
    p.add_argument("--label", default="wave")
    p.add_argument("--ready-file")
    p.add_argument("--max-inflight", type=int, default=50)
    args = p.parse_args()
    if args.count < 0 or args.arrival < 0 or args.hold < 0 or args.max_inflight < 1:
        p.error("COUNT, ARRIVAL and HOLD must be >= 0, --max-inflight >= 1")
    if not [c for c in args.channels.split(",") if c]:
        p.error("CHANNELS must name at least one channel")
    sys.exit(asyncio.run(Wave(args).run()))


if __name__ == "__main__":
    main()
