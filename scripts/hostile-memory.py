#!/usr/bin/env python3
"""The memory hostile clients can pin on one node (issue #12): RSS growth per client.

Starts a pushwire node (memory broker) from --bin, fills one history channel with 100
messages of 60 KiB, then runs the two attacks of issue #12 against it and reads the node's
RSS from /proc/<pid>/status:

1. replay: N anonymous clients each upgrade, `connect`, then send ONE frame of 100 pairs
   `subscribe` with `recover` + `unsubscribe`, and never read again; once recovering from
   offset 0 (the issue's 6 MB), once from the oldest offset whose recovery still fits in
   the replay bound. The peak RSS growth over the baseline, divided by N, is what one
   such client pins; the replay bound keeps it at about 2 x client.queue_max_bytes.
2. empty reads: one client sends --reads `history` requests (100 per frame) for random
   channel names nobody published to, reading the replies. The RSS left afterwards is
   what such reads store (nothing, on a fixed build).

Standard library only. Example (release build; the figure is memory, not timing):

    cargo build --release --bin pushwire
    scripts/hostile-memory.py --bin target/release/pushwire --clients 50
"""

import argparse
import base64
import json
import os
import random
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

API_KEY = "hostile-memory-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def publish(port, channel, data):
    body = json.dumps({"channel": channel, "data": data}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/publish",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def frame(text):
    """One masked client text frame."""
    payload = text.encode()
    header = bytearray([0x81])
    n = len(payload)
    if n < 126:
        header.append(0x80 | n)
    elif n < 65536:
        header.append(0x80 | 126)
        header += n.to_bytes(2, "big")
    else:
        header.append(0x80 | 127)
        header += n.to_bytes(8, "big")
    mask = os.urandom(4)
    header += mask
    return bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock):
    """One unmasked server frame's payload (text or binary)."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        return data

    head = exactly(2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(8), "big")
    return exactly(n)


def open_ws(port):
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pushwire.v1.json\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("upgrade refused")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(response.split(b"\r\n")[0].decode())
    sock.sendall(frame(json.dumps({"op": "connect", "id": 1})))
    reply = json.loads(read_frame(sock).split(b"\n")[0])
    if reply.get("op") != "connected":
        raise RuntimeError(f"connect answered {reply}")
    return sock


def wait_ready(port, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("pushwire exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("node never ready")


def replay_attack(port, pid, clients, epoch, offset):
    pairs = []
    for pair in range(100):
        pairs.append(json.dumps({"op": "subscribe", "id": 10 + 2 * pair, "channel": "feed:big",
                                 "recover": {"offset": offset, "epoch": epoch}}))
        pairs.append(json.dumps({"op": "unsubscribe", "id": 11 + 2 * pair, "channel": "feed:big"}))
    attack = frame("\n".join(pairs))
    before = rss_kib(pid)
    sockets = []
    for _ in range(clients):
        sock = open_ws(port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(attack)
        sockets.append(sock)
    # Sample until the write timeout has closed them all (or 30 s).
    peak = rss_kib(pid)
    deadline = time.time() + 30
    while time.time() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.02)
        if time.time() > deadline - 29 and connections(port) == 0:
            break
    for sock in sockets:
        sock.close()
    return before, peak


def connections(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("pushwire_connections{") or line.startswith("pushwire_connections "):
            total += float(line.split()[-1])
    return total


def empty_reads(port, pid, reads):
    before = rss_kib(pid)
    sock = open_ws(port)
    sent = 0
    while sent < reads:
        batch = []
        for _ in range(min(100, reads - sent)):
            name = "".join(random.choices(string.ascii_lowercase, k=24))
            batch.append(json.dumps({"op": "history", "id": 100 + sent, "channel": f"feed:{name}"}))
            sent += 1
        sock.sendall(frame("\n".join(batch)))
        got = 0
        while got < len(batch):
            got += len(read_frame(sock).split(b"\n"))
    sock.close()
    time.sleep(0.5)
    return before, rss_kib(pid)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/release/pushwire")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queue-max-bytes", type=int, default=1 << 20)
    parser.add_argument("--reads", type=int, default=40000)
    args = parser.parse_args()

    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
max_pending_connections_per_ip = 0
[api]
keys = ["{API_KEY}"]
[client]
queue_max_bytes = {args.queue_max_bytes}
rate_limit_per_sec = 0
[namespaces.feed]
history_size = 100
history_ttl_secs = 3600
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
        path = f.name
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proc = subprocess.Popen([args.bin, "--config", path], env=env)
    try:
        wait_ready(port, proc)
        pad = "p" * (60 * 1024 - 20)
        epoch = ""
        for seq in range(100):
            epoch = publish(port, "feed:big", {"seq": seq, "pad": pad})["epoch"]
        time.sleep(0.5)
        # From offset 0 (the attack: 6 MB, more than any queue may hold), and from
        # the oldest offset whose recovery still fits in 2 x queue_max_bytes (the worst
        # case the bound admits: the first pair's replay is queued, the others refused).
        fits = 2 * args.queue_max_bytes // (61 * 1024) - 1
        for offset in (0, 100 - fits):
            before, peak = replay_attack(port, proc.pid, args.clients, epoch, offset)
            per_client = (peak - before) * 1024 / args.clients
            print(json.dumps({
                "attack": "replay",
                "recover_from_offset": offset,
                "clients": args.clients,
                "queue_max_bytes": args.queue_max_bytes,
                "rss_before_kib": before,
                "rss_peak_kib": peak,
                "growth_per_client_bytes": round(per_client),
                "per_client_over_queue_max_bytes": round(per_client / args.queue_max_bytes, 2),
            }), flush=True)
        before, after = empty_reads(port, proc.pid, args.reads)
        print(json.dumps({
            "attack": "empty_reads",
            "reads": args.reads,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "growth_kib": after - before,
        }), flush=True)
    finally:
        proc.terminate()
        proc.wait()
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
