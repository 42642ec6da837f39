"""The libzmq side of bench/pub-stall.sh: a libzmq (pyzmq) PUB socket with SNDHWM
publishes ~100k msg/s to one SUB process, which is frozen with SIGSTOP; the publisher's
RSS is printed every second. Compare with zmq.rs's PUB in bench/pub-stall.sh.

    python3 bench/pub_stall_libzmq.py --hwm 10000 --stall 12

Bounded: runs --stall + 5 seconds, stops the subscriber it started (by PID). Loopback.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

import zmq

SUBSCRIBER = """
import sys, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.RCVHWM, 1000)
s.connect(sys.argv[1])
s.setsockopt(zmq.SUBSCRIBE, b"")
while True:
    s.recv_multipart()
"""


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hwm", type=int, default=10_000, help="SNDHWM, messages per subscriber")
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--stall", type=int, default=12)
    args = parser.parse_args()

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, args.hwm)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{port}"])
    time.sleep(1.0)
    stop = threading.Event()
    sent = [0]

    def publish() -> None:
        frames = [b"c", b"tick", b"x" * args.size]
        start = time.monotonic()
        while not stop.is_set():
            for _ in range(1000):
                pub.send_multipart(frames)
            sent[0] += 1000
            delay = start + sent[0] / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    worker = threading.Thread(target=publish)
    worker.start()
    try:
        time.sleep(2)
        print(f"SNDHWM {args.hwm}; publisher RSS before the stall: {rss_kb()} kB", flush=True)
        os.kill(sub.pid, signal.SIGSTOP)
        for i in range(1, args.stall + 1):
            time.sleep(1)
            print(f"subscriber stopped {i} s: publisher RSS {rss_kb()} kB", flush=True)
        os.kill(sub.pid, signal.SIGCONT)
        time.sleep(2)
    finally:
        stop.set()
        worker.join()
        sub.kill()
        sub.wait()
    print(f"published {sent[0]} messages", flush=True)


if __name__ == "__main__":
    main()
