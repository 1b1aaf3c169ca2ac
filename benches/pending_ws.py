#!/usr/bin/env python3
"""RSS per pending WebSocket: GraphQL upgrades without a credential, answered 101 by the
gateway and left waiting for `connection_init` (no upstream connection is made for them).

    python3 benches/pending_ws.py            # 400 sockets (the default per-address cap is 512)
    python3 benches/pending_ws.py --sockets 200
    SESSIONGATE_BIN=/tmp/old/sessiongate python3 benches/pending_ws.py   # another build
    python3 benches/pending_ws.py --config my.toml                        # another config

Starts the release gateway (`cargo build --release` first) on the shipped config with one
worker thread, opens 50 sockets to warm up, reads its RSS, opens N more and reads it again;
prints (after - before) / N.
"""

import argparse
import os
import re
import socket
import subprocess
import time

from harness import ROOT, free_port

HANDSHAKE = (b"GET /v1/graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=400)
    ap.add_argument("--config", default=os.path.join(ROOT, "config/sessiongate.toml"))
    args = ap.parse_args()
    proxy, admin, upstream = free_port(), free_port(), free_port()
    env = dict(os.environ, SESSIONGATE_LISTEN=f"127.0.0.1:{proxy}",
               SESSIONGATE_ADMIN_LISTEN=f"127.0.0.1:{admin}",
               SESSIONGATE_UPSTREAM=f"http://127.0.0.1:{upstream}", SESSIONGATE_THREADS="1")
    binary = os.environ.get("SESSIONGATE_BIN", os.path.join(ROOT, "target/release/sessiongate"))
    gw = subprocess.Popen([binary, "serve", "--config", args.config],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def rss():
            with open(f"/proc/{gw.pid}/status") as f:
                return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", proxy)).close()
                break
            except OSError:
                time.sleep(0.1)

        def pending():
            s = socket.create_connection(("127.0.0.1", proxy))
            s.sendall(HANDSHAKE)
            head = s.recv(4096)
            if not head.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"not upgraded: {head!r}")
            return s

        held = [pending() for _ in range(50)]
        time.sleep(0.5)
        before = rss()
        held += [pending() for _ in range(args.sockets)]
        time.sleep(0.5)
        after = rss()
        print(f"gateway RSS {before} KiB -> {after} KiB with {args.sockets} more pending "
              f"sockets: {(after - before) * 1024 // args.sockets} bytes each")
    finally:
        gw.kill()
        gw.wait()


if __name__ == "__main__":
    main()
