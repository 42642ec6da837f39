"""Publish to pushfleet relays from Python: a copyable example for backends.

    pip install pyzmq
    python3 pushfleet_publish.py --relay tcp://127.0.0.1:5560 ticker_INR tick '{"price":83.12}'
    python3 pushfleet_publish.py --relay tcp://127.0.0.1:5560 --count 1000 --rate 100 \\
        ticker_INR tick '{"price":83.12}'
    python3 pushfleet_publish.py --relay tcp://10.0.0.1:5560 --relay tcp://10.0.0.2:5560 \\
        --shard ticker_INR ticker_USD
    python3 pushfleet_publish.py --selftest

As a module:

    from pushfleet_publish import Publisher, BusyError

    with Publisher(["tcp://127.0.0.1:5560", "tcp://127.0.0.1:5570"]) as pub:
        pub.publish("ticker_INR", "tick", '{"price":83.12}')

Each publish is a ZeroMQ multipart message [channel, event, data], all UTF-8, with
data being JSON text that WebSocket clients receive untouched. It goes over a PUSH
socket straight to the relay that owns the channel (rendezvous hashing over the
relays' publish endpoint strings, the same rule as the Rust `shard` module). Only
pyzmq and the standard library are needed; `http_publish` needs only the latter.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from typing import Any, NoReturn, Sequence

import zmq

__all__ = [
    "DEFAULT_RELAY",
    "MAX_CHANNEL_LEN",
    "MAX_DATA",
    "MAX_EVENT_LEN",
    "BusyError",
    "HttpPublishError",
    "Publisher",
    "http_publish",
    "http_publish_batch",
    "owner",
    "score",
    "validate",
]

DEFAULT_RELAY = "tcp://127.0.0.1:5560"
#: Longest channel name, in bytes.
MAX_CHANNEL_LEN = 128
#: Longest event name, in bytes (UTF-8).
MAX_EVENT_LEN = 128
#: Largest data frame, in bytes: the relays' default `--max-publish-size`.
MAX_DATA = 1024 * 1024
#: Messages a PUSH socket queues for a relay that is not taking them yet.
SEND_QUEUE = 100_000
#: How long closing waits for queued messages to reach the relays, in milliseconds.
LINGER_MS = 5000

_CHANNEL_BAD_CHAR = re.compile(r"[^A-Za-z0-9_\-.:@=]")
_TCP_ENDPOINT = re.compile(r"tcp://(.+):([0-9]{1,5})")

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


# --- Sharding -----------------------------------------------------------------------


def score(endpoint: str, channel: str) -> int:
    """Rendezvous score of `channel` on the relay whose publish endpoint is `endpoint`.

    64-bit FNV-1a over ``endpoint + b"\\xff" + channel`` (UTF-8), finished with the
    splitmix64 mixer. Must equal ``pushfleet_protocol::shard::score`` bit for bit.
    """
    h = _FNV_OFFSET
    for byte in endpoint.encode("utf-8") + b"\xff" + channel.encode("utf-8"):
        h ^= byte
        h = (h * _FNV_PRIME) & _MASK64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK64
    h ^= h >> 31
    return h


def owner(endpoints: Sequence[str], channel: str) -> str:
    """The endpoint in `endpoints` that owns `channel` (order does not matter).

    Highest score wins; on an exact tie the lexicographically smaller endpoint wins.
    Endpoints are compared as strings, so use exactly the publish endpoints the
    relays advertise (``tcp://127.0.0.1:5560`` and ``tcp://localhost:5560`` shard
    differently).

    Raises:
        ValueError: `endpoints` is empty.
    """
    if not endpoints:
        raise ValueError("no relays given: cannot pick the owner of a channel")
    best = None
    best_score = -1
    for endpoint in endpoints:
        s = score(endpoint, channel)
        if s > best_score or (s == best_score and endpoint < best):
            best, best_score = endpoint, s
    return best


# --- Validation ---------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN, Infinity and -Infinity; JSON (and the relay) does not.
    raise ValueError(f"{name} is not valid JSON")


def validate(channel: str, event: str, data: str, max_data: int = MAX_DATA) -> None:
    """Check a publish by the relay's rules; raise ValueError naming what is wrong.

    - channel: 1 to 128 bytes of ASCII letters, digits and ``_ - . : @ =``;
    - event: 1 to 128 bytes of UTF-8;
    - data: at most `max_data` bytes of UTF-8 that parse as JSON text.

    The relay would drop a publish failing these checks (counted in its
    ``/stats`` under ``dropped``), so catching them here is the only way to hear
    about it when publishing over ZeroMQ.
    """
    for name, value in (("channel", channel), ("event", event), ("data", data)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
    if not channel:
        raise ValueError("bad channel: channel name is empty")
    if len(channel.encode("utf-8", "surrogatepass")) > MAX_CHANNEL_LEN:
        raise ValueError(
            f"bad channel: channel name is {len(channel.encode('utf-8', 'surrogatepass'))} "
            f"bytes long; the limit is {MAX_CHANNEL_LEN}"
        )
    bad = _CHANNEL_BAD_CHAR.search(channel)
    if bad:
        raise ValueError(
            f"bad channel: channel name contains {bad.group()!r}; "
            "allowed are ASCII letters, digits and _ - . : @ ="
        )
    try:
        event_bytes = event.encode("utf-8")
        data_bytes = data.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"event or data is not valid UTF-8 text: {e.reason}") from None
    if not 1 <= len(event_bytes) <= MAX_EVENT_LEN:
        raise ValueError(
            f"event name must be 1 to {MAX_EVENT_LEN} bytes, not {len(event_bytes)}"
        )
    if len(data_bytes) > max_data:
        raise ValueError(f"data is {len(data_bytes)} bytes; the limit is {max_data}")
    try:
        json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"data is not valid JSON: {e}") from None
    except RecursionError:
        # The relay would accept it, but Python cannot check it; refuse to guess.
        raise ValueError("data is nested too deeply to check as JSON here") from None


# --- Publishing over ZeroMQ ---------------------------------------------------------


class BusyError(Exception):
    """A relay's send queue is full: the relay is down, unreachable or overloaded.

    Nothing was sent. Retry later with backoff, or drop the message if it is
    superseded by the next one anyway (ticks, presence).
    """

    def __init__(self, relay: str, channel: str) -> None:
        super().__init__(
            f"the queue for relay {relay} is full (is it down or overloaded?); "
            f"publish to {channel!r} not sent"
        )
        self.relay = relay
        self.channel = channel


class Publisher:
    """Sends publishes to the relays that own their channels.

    One ZeroMQ PUSH socket per relay (SNDHWM 100000, LINGER 5 s): while a relay is
    restarting or unreachable, its messages wait in the queue instead of being
    dropped, and a full queue raises BusyError. ZeroMQ sockets are not thread-safe:
    use one Publisher per thread (they can share one `zmq.Context`).
    """

    def __init__(
        self,
        relays: list[str],
        context: zmq.Context | None = None,
        *,
        max_data: int = MAX_DATA,
    ) -> None:
        """Connect to `relays` (publish endpoints, ``tcp://host:port``).

        Connecting is asynchronous: publishes made before a relay is reachable are
        queued. Call `wait_connected` to fail fast on a wrong address. A `context`
        passed in is left open by `close`; one created here is terminated by it.
        """
        self.relays = sorted(set(relays))
        if not self.relays:
            raise ValueError("no relays given")
        self.max_data = max_data
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[str, zmq.Socket] = {}
        self._connected: set[str] = set()
        self._timeouts: dict[str, int] = {}
        try:
            for endpoint in self.relays:
                sock = self._context.socket(zmq.PUSH)
                self._sockets[endpoint] = sock
                sock.setsockopt(zmq.SNDHWM, SEND_QUEUE)
                sock.setsockopt(zmq.LINGER, LINGER_MS)
                self._monitors[endpoint] = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
                sock.connect(endpoint)
        except Exception:
            self.close()
            raise

    def owner(self, channel: str) -> str:
        """The relay endpoint that owns `channel`."""
        return owner(self.relays, channel)

    def publish(
        self, channel: str, event: str, data: str, timeout_ms: int | None = None
    ) -> None:
        """Validate and send one publish to the relay that owns `channel`.

        `data` is JSON text, passed to clients unchanged (use ``json.dumps`` to
        make it). With `timeout_ms` None or 0 the call never blocks; otherwise it
        waits up to that long for room in a full queue.

        Raises:
            ValueError: the publish breaks the relay's rules (nothing sent).
            BusyError: the owner's queue stayed full (nothing sent).
        """
        if timeout_ms is not None and timeout_ms < 0:
            raise ValueError(f"timeout_ms must be None or >= 0, not {timeout_ms}")
        validate(channel, event, data, self.max_data)
        relay = self.owner(channel)
        sock = self._sockets.get(relay)
        if sock is None:
            raise RuntimeError("publisher is closed")
        frames = [channel.encode("utf-8"), event.encode("utf-8"), data.encode("utf-8")]
        try:
            if not timeout_ms:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
            else:
                if self._timeouts.get(relay) != timeout_ms:
                    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
                    self._timeouts[relay] = timeout_ms
                sock.send_multipart(frames)
        except zmq.Again:
            raise BusyError(relay, channel) from None

    def wait_connected(self, timeout: float = 3.0) -> list[str]:
        """Wait up to `timeout` seconds for a TCP connection to every relay.

        Returns the relays still not connected (empty when all are). Optional:
        publishing works without it, but a wrong address otherwise only shows as
        messages silently dropped when `close` gives up after the linger.
        """
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        for endpoint, monitor in self._monitors.items():
            if endpoint not in self._connected:
                poller.register(monitor, zmq.POLLIN)
        while len(self._connected) < len(self._monitors):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            for monitor, _ in poller.poll(left_ms):
                monitor.recv_multipart()  # [event id + value, endpoint]
                endpoint = next(e for e, m in self._monitors.items() if m is monitor)
                self._connected.add(endpoint)
                poller.unregister(monitor)
        return [e for e in self.relays if e not in self._connected]

    def close(self) -> None:
        """Close the sockets, letting queued messages flush for up to 5 s.

        If the context was created here, this blocks until they are flushed (or
        the linger runs out); with a caller's context, terminating it does that.
        """
        for endpoint, sock in self._sockets.items():
            if endpoint in self._monitors:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
            sock.close()  # keeps the LINGER set above
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        self._sockets.clear()
        self._monitors.clear()
        if self._own_context and not self._context.closed:
            self._context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Publishing over HTTP (standard library only) -----------------------------------


class HttpPublishError(Exception):
    """A relay refused an HTTP publish: `status`, `code` (e.g. ``invalid_publish``,
    ``busy``) and `message` as the relay sent them; `accepted` for a partly queued
    batch (503 ``busy``)."""

    def __init__(
        self, status: int, code: str, message: str, accepted: int | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.accepted = accepted


def _http_post(url: str, body: str, timeout: float) -> int:
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(json.load(response).get("accepted", 0))
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            err = json.loads(raw)
            code, message = str(err["error"]), str(err.get("message", ""))
            accepted = err.get("accepted")
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not the relay's JSON error (e.g. a proxy, or 413 from the HTTP layer).
            code, message, accepted = f"http_{e.code}", raw.strip() or str(e.reason), None
        raise HttpPublishError(e.code, code, message, accepted) from None


def _http_item(channel: str, event: str, data: str) -> str:
    # data goes in verbatim, so clients get the exact text (number formats, key order).
    return '{"channel":%s,"event":%s,"data":%s}' % (json.dumps(channel), json.dumps(event), data)


def http_publish(
    base_url: str, channel: str, event: str, data_json_text: str, timeout: float = 5.0
) -> int:
    """Publish one message through a relay's HTTP API (``POST {base_url}/publish``).

    `base_url` is e.g. ``http://127.0.0.1:8070``. Any relay will do: a relay that
    does not own the channel forwards it to the owner. Returns the number accepted
    (1).

    Raises:
        ValueError: the publish breaks the relay's rules (checked before sending).
        HttpPublishError: the relay answered non-2xx (400, 413, 503 busy, ...).
        urllib.error.URLError: the relay could not be reached.
    """
    validate(channel, event, data_json_text)
    body = _http_item(channel, event, data_json_text)
    return _http_post(base_url.rstrip("/") + "/publish", body, timeout)


def http_publish_batch(
    base_url: str, items: Sequence[tuple[str, str, str]], timeout: float = 10.0
) -> int:
    """Publish 1 to 1000 ``(channel, event, data_json_text)`` in one request
    (``POST {base_url}/publish/batch``). The relay refuses the whole batch if one
    item is bad. Returns the number accepted. Raises as `http_publish`.
    """
    if not 1 <= len(items) <= 1000:
        raise ValueError(f"a batch holds 1 to 1000 publishes, not {len(items)}")
    for i, (channel, event, data) in enumerate(items):
        try:
            validate(channel, event, data)
        except ValueError as e:
            raise ValueError(f"item {i}: {e}") from None
    body = "[" + ",".join(_http_item(*item) for item in items) + "]"
    return _http_post(base_url.rstrip("/") + "/publish/batch", body, timeout)


# --- Command line -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _selftest() -> None:
    """Assert the shard test vectors and the validation rules; print "ok"."""
    assert score("tcp://127.0.0.1:5560", "ticker_INR") == 0x2218C901E759EABF
    assert score("tcp://127.0.0.1:5570", "ticker_INR") == 0x8DB0612DD748EC53
    assert score("", "") == 0x4F2DB50F124040CD
    pair = ["tcp://127.0.0.1:5560", "tcp://127.0.0.1:5570"]
    assert owner(pair, "ticker_INR") == "tcp://127.0.0.1:5570"
    assert owner(pair[::-1], "ticker_INR") == "tcp://127.0.0.1:5570"
    for n in range(200):
        assert owner(pair, f"c{n}") == owner(pair[::-1], f"c{n}")
    assert owner(["tcp://b:1", "tcp://a:1", "tcp://b:1"], "x") in ("tcp://a:1", "tcp://b:1")

    def refused(fragment: str, *args: Any) -> None:
        try:
            validate(*args)
        except ValueError as e:
            assert fragment in str(e), f"{args!r}: {e}"
        else:
            raise AssertionError(f"accepted {args!r}")

    for good in ["ticker_INR", "a", "prices:ex-1:BTC.INR@depth=5", "x" * 128]:
        validate(good, "tick", '{"price":83.12}')
    validate("c", "é" * 64, " [1, 2.5e3, null, \"\\u00e9\"] ")
    validate("c", "e", '"' + "y" * (MAX_DATA - 2) + '"')
    refused("channel name is empty", "", "e", "1")
    refused("129 bytes long", "x" * 129, "e", "1")
    refused("contains ' '", "a b", "e", "1")
    refused("contains '/'", "a/b", "e", "1")
    refused("contains 'é'", "é", "e", "1")
    refused("event name must be 1 to 128 bytes, not 0", "c", "", "1")
    refused("not 130", "c", "é" * 65, "1")
    refused("data is 1048577 bytes", "c", "e", '"' + "y" * (MAX_DATA - 1) + '"')
    refused("data is 3 bytes; the limit is 2", "c", "e", "123", 2)
    for bad in ["", "{", "{'a':1}", "[1,]", '{"a":1}{"b":2}', "NaN", "-Infinity", '"\t"']:
        refused("not valid JSON", "c", "e", bad)
    refused("not valid UTF-8", "c", "e", '"\udcff"')
    try:
        validate("c", "e", b"1")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("accepted bytes data")
    print("ok")


def _numbered(data: str, n: int) -> str:
    """`data` with ``"n": n`` set if it is a JSON object, else unchanged."""
    value = json.loads(data)
    if not isinstance(value, dict):
        return data
    value["n"] = n
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = _Parser(
        prog="pushfleet_publish.py",
        description="Publish to pushfleet relays over ZeroMQ (sent to each channel's owner).",
        epilog="Exit status: 0 sent, 1 relay unreachable or busy, 2 invalid input.",
    )
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help=f"relay publish endpoint, repeatable (default {DEFAULT_RELAY})",
    )
    parser.add_argument("--count", type=int, default=1, help="publish N times (default 1)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="publishes per second (default 0: no pacing)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to wait for the relays to accept a connection (default 3)",
    )
    parser.add_argument(
        "--shard",
        nargs="+",
        metavar="CHANNEL",
        help="print 'channel owner' per channel and exit (sends nothing)",
    )
    parser.add_argument("--selftest", action="store_true", help="check the test vectors")
    parser.add_argument("channel", nargs="?", help="channel name")
    parser.add_argument("event", nargs="?", help="event name")
    parser.add_argument("data", nargs="?", help="JSON text, passed to clients unchanged")
    args = parser.parse_args(argv)

    if args.selftest:
        _selftest()
        return 0
    relays = args.relay or [DEFAULT_RELAY]
    for relay in relays:
        match = _TCP_ENDPOINT.fullmatch(relay)
        if not match or not 0 < int(match.group(2)) < 65536:
            parser.error(f"--relay {relay!r} is not a tcp://host:port endpoint")
    if args.shard:
        if args.channel is not None:
            parser.error("--shard takes channels only, not CHANNEL EVENT DATA")
        for channel in args.shard:
            print(f"{channel} {owner(relays, channel)}")
        return 0
    if args.data is None:
        parser.error("expected CHANNEL EVENT DATA (or --shard CHANNEL...)")
    if args.count < 1:
        parser.error(f"--count must be at least 1, not {args.count}")
    if args.rate < 0:
        parser.error(f"--rate must be 0 or more, not {args.rate}")
    try:
        validate(args.channel, args.event, args.data)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: invalid publish: {e}\n")

    prog = parser.prog
    sent = 0
    started = time.monotonic()
    status = 0
    with Publisher(relays) as pub:
        relay = pub.owner(args.channel)
        # Only the owner matters here; another relay being down is not an error.
        if relay in pub.wait_connected(args.connect_timeout):
            print(
                f"{prog}: relay {relay} not reachable within {args.connect_timeout:g} s",
                file=sys.stderr,
            )
            return 1
        try:
            for n in range(1, args.count + 1):
                if args.rate > 0:
                    time.sleep(max(0.0, started + (n - 1) / args.rate - time.monotonic()))
                data = _numbered(args.data, n) if args.count > 1 else args.data
                # Waiting for room is right for a CLI: it should deliver, not drop.
                pub.publish(args.channel, args.event, data, timeout_ms=5000)
                sent += 1
        except ValueError as e:  # e.g. adding "n" pushed data over the size limit
            print(f"{prog}: invalid publish: {e}", file=sys.stderr)
            status = 2
        except BusyError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            status = 130
    elapsed = time.monotonic() - started  # includes flushing the queue on close
    print(
        f"{prog}: sent {sent}/{args.count} to {args.channel!r} event {args.event!r} "
        f"via {relay} in {elapsed:.3f} s ({sent / max(elapsed, 1e-9):.0f}/s)",
        file=sys.stderr,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
