#!/usr/bin/env python3
"""Memory per idle keep-alive connection, on the release build.

Starts the echo upstream and the gateway on its default config (in-memory store, default
connection caps), opens N client connections from 40 loopback source addresses (the
per-address cap is 512), makes one request on each and leaves it idle, then prints the
gateway's RSS before, with them, and after they close, and the cost per connection.

Usage: benches/idle_conns.py [--connections 10000] [--profile release|debug] [--no-build]
       SESSIONGATE_BIN=/tmp/old/sessiongate benches/idle_conns.py --no-build --config old.toml
Needs: cargo. The idle timeout (60 s by default) must outlast the run (~25 s).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

from harness import ROOT, free_port, rss_kib, wait_port

REQUEST = b"GET /public/idle HTTP/1.1\r\nHost: gateway\r\n\r\n"


def exchange(sock):
    """One request; True on a whole 200 response (Content-Length framed)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--config", default=os.path.join(ROOT, "config/sessiongate.toml"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--settle", type=float, default=15,
                    help="seconds to wait before the RSS readings")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        sys.exit(f"open-files hard limit {hard} is too low for {args.connections} connections")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--quiet", "--bin", "sessiongate", "--example",
                        "echo_upstream"] + (["--release"] if args.profile == "release" else []),
                       cwd=ROOT, check=True)
    target = os.path.join(ROOT, "target", args.profile)
    upstream, proxy, admin = free_port(), free_port(), free_port()
    procs = [subprocess.Popen(
        [os.path.join(target, "examples/echo_upstream"), f"127.0.0.1:{upstream}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    env = {**os.environ, "RUST_LOG": "warn", "SESSIONGATE_LISTEN": f"127.0.0.1:{proxy}",
           "SESSIONGATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
           "SESSIONGATE_UPSTREAM": f"http://127.0.0.1:{upstream}"}
    binary = os.environ.get("SESSIONGATE_BIN", os.path.join(target, "sessiongate"))
    gw = subprocess.Popen([binary, "serve", "--config",
                           args.config],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(gw)
    socks = []
    try:
        if not (wait_port(proxy) and wait_port(upstream)):
            sys.exit("the gateway or the upstream did not start")
        # Warm up (worker threads, pools, allocator arenas) before the baseline.
        for _ in range(2000):
            with socket.create_connection(("127.0.0.1", proxy)) as s:
                exchange(s)
        time.sleep(args.settle)
        before = rss_kib(gw.pid)
        t0 = time.monotonic()
        for i in range(args.connections):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i % 40}", 0))
            s.connect(("127.0.0.1", proxy))
            if not exchange(s):
                sys.exit(f"connection {i} got no 200")
            socks.append(s)
        opened = time.monotonic() - t0
        time.sleep(2)
        held_early = rss_kib(gw.pid)
        # Freed request buffers go back to the OS over jemalloc's decay time (10 s).
        time.sleep(args.settle)
        held = rss_kib(gw.pid)
        sampled = socks[::100]
        alive = sum(exchange(s) for s in sampled)
        if alive != len(sampled):
            # Connections closed early would make the per-connection figure too low.
            sys.exit(f"only {alive} of {len(sampled)} sampled connections still answered")
        for s in socks:
            s.close()
        socks = []
        time.sleep(args.settle)
        after = rss_kib(gw.pid)
        per = (held - before) * 1024 / args.connections
        print(f"{args.connections} idle keep-alive connections ({args.profile} build, {os.path.basename(args.config)}) "
              f"opened in {opened:.1f} s; all {len(sampled)} sampled still answered")
        print(f"gateway RSS: {before / 1024:.1f} MiB before; with them {held_early / 1024:.1f} "
              f"MiB after 2 s, {held / 1024:.1f} MiB after {2 + args.settle:.0f} s; "
              f"{after / 1024:.1f} MiB {args.settle:.0f} s after they closed")
        print(f"per idle connection: {per / 1024:.1f} KiB")
    finally:
        for s in socks:
            s.close()
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
