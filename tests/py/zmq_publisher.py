"""A real libzmq publisher (pyzmq) driven over stdin/stdout, for end-to-end tests.

Binds an XPUB socket (a PUB that also reports subscriptions), prints one JSON line per
event on stdout, and publishes what stdin asks for:

  stdin:  {"frames": ["channel", "event", "{\"json\":1}"]}   one multipart publish
  stdout: {"kind": "ready", "endpoint": "tcp://127.0.0.1:PORT"}
          {"kind": "subscribe" | "unsubscribe", "topic": "..."}
          {"kind": "sent", "count": N}
"""

import argparse
import json
import sys
import threading

import zmq


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="tcp://127.0.0.1:*")
    args = parser.parse_args()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, not just the first
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.bind)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    out_lock = threading.Lock()

    def emit(obj: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    emit({"kind": "ready", "endpoint": endpoint})
    commands = ctx.socket(zmq.PAIR)
    commands.bind("inproc://commands")
    feeder = ctx.socket(zmq.PAIR)
    feeder.connect("inproc://commands")

    def read_stdin() -> None:
        for line in sys.stdin:
            line = line.strip()
            if line:
                feeder.send_string(line)
        feeder.send_string("")  # EOF: stop

    threading.Thread(target=read_stdin, daemon=True).start()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(commands, zmq.POLLIN)
    sent = 0
    while True:
        events = dict(poller.poll(timeout=60_000))
        if not events:
            break  # a test that went silent for a minute is over
        if sock in events:
            msg = sock.recv()
            kind = "subscribe" if msg[:1] == b"\x01" else "unsubscribe"
            emit({"kind": kind, "topic": msg[1:].decode("utf-8", "replace")})
        if commands in events:
            line = commands.recv_string()
            if not line:
                break
            request = json.loads(line)
            frames = [f.encode() if isinstance(f, str) else bytes(f) for f in request["frames"]]
            sock.send_multipart(frames)
            sent += 1
            emit({"kind": "sent", "count": sent})
    sock.close()
    commands.close()
    feeder.close()
    ctx.term()


if __name__ == "__main__":
    main()
