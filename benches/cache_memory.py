#!/usr/bin/env python3
"""Bytes per cached session: RSS delta of the gateway / sessions cached.

    python3 benches/cache_memory.py                     # Redis store, 100,000 sessions
    python3 benches/cache_memory.py --store memory --sessions 50000
    SESSIONGATE_BIN=/path/to/other/sessiongate python3 benches/cache_memory.py   # another build

Starts its own redis-server (free port) for the Redis store, the release gateway
(`cargo build --release` first) with the cache sized and timed to hold every session for the
whole run (`cache.max_entries` = 2 x sessions, `cache.ttl_seconds` = 3600), and a small
asyncio upstream that answers 200. Then:

1. creates N sessions through the admin API (they live in the store; with the memory store
   that is the gateway's own heap) and reads the gateway's RSS;
2. sends one authenticated request per session, so that each token is verified once and
   its session loaded into the hot cache (one entry per session, remembering the token),
   and reads the RSS again.

(2) - (1), divided by N, is what one cached session costs the gateway. Prints both RSS
readings and the figure; exits 1 if a request was not answered 200.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from harness import ROOT, free_port, rss_kib, wait_port

ADMIN_TOKEN = "dev-admin-token-not-for-production"


def upstream(port, ready):
    """A keep-alive HTTP/1.1 server that answers every request 200 `ok`."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def in_threads(n, count, work):
    """Runs work(i) for i in range(count) over n threads, each with its own connection."""
    errors = []

    def run(k):
        try:
            for i in range(k, count, n):
                work(i)
        except Exception as e:  # reported below, the run fails
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", choices=["redis", "memory"], default="redis")
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    binary = os.environ.get("SESSIONGATE_BIN") or os.path.join(ROOT, "target", "release", "sessiongate")
    if not os.access(binary, os.X_OK):
        sys.exit("build first: cargo build --release")
    work = tempfile.mkdtemp()
    procs = []
    try:
        up = free_port()
        ready = threading.Event()
        threading.Thread(target=upstream, args=(up, ready), daemon=True).start()
        ready.wait(10)
        proxy, admin = free_port(), free_port()
        with open(os.path.join(ROOT, "config", "sessiongate.toml")) as f:
            text = f.read()
        text = re.sub(r"(?m)^(max_entries\s*=\s*)\d+", rf"\g<1>{2 * args.sessions}", text, count=1)
        text = re.sub(r"(?m)^(ttl_seconds\s*=\s*)\d+", r"\g<1>3600", text, count=1)
        conf = os.path.join(work, "gw.toml")
        with open(conf, "w") as f:
            f.write(text)
        env = dict(os.environ, SESSIONGATE_LISTEN=f"127.0.0.1:{proxy}",
                   SESSIONGATE_ADMIN_LISTEN=f"127.0.0.1:{admin}",
                   SESSIONGATE_UPSTREAM=f"http://127.0.0.1:{up}", RUST_LOG="warn")
        if args.store == "redis":
            if not shutil.which("redis-server"):
                sys.exit("redis-server is not installed (apt-get install redis-server)")
            rport = free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", work],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(rport)
            env["SESSIONGATE_REDIS_URL"] = f"redis://127.0.0.1:{rport}"
        gw = subprocess.Popen([binary, "serve", "--config", conf], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "gw.log"), "w"))
        procs.append(gw)
        if not (wait_port(proxy) and wait_port(admin)):
            sys.exit("the gateway did not start")

        tokens = [None] * args.sessions
        local = threading.local()

        def conn(port):
            key = f"c{port}"
            if not hasattr(local, key):
                setattr(local, key, http.client.HTTPConnection("127.0.0.1", port, timeout=10))
            return getattr(local, key)

        def create(i):
            body = json.dumps({"user_id": f"user-{i}", "business_id": "b1", "host_id": "h1",
                               "role": "user", "ttl_seconds": 3600})
            c = conn(admin)
            c.request("POST", "/admin/sessions", body,
                      {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status != 201:
                raise RuntimeError(f"create: {r.status} {data[:200]!r}")
            tokens[i] = json.loads(data)["access_token"]

        def use(i):
            c = conn(proxy)
            c.request("GET", "/v1/graphql", headers={"Authorization": f"Bearer {tokens[i]}"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"use: {r.status}")

        start = time.time()
        in_threads(args.threads, args.sessions, create)
        time.sleep(2)
        before = rss_kib(gw.pid)
        created = time.time() - start
        in_threads(args.threads, args.sessions, use)
        time.sleep(2)
        after = rss_kib(gw.pid)
        print(f"store: {args.store}; sessions: {args.sessions:,} (created in {created:.0f} s)")
        print(f"gateway RSS with the sessions created: {before / 1024:.1f} MiB")
        print(f"gateway RSS with all of them cached:   {after / 1024:.1f} MiB")
        print(f"bytes per cached session: {(after - before) * 1024 / args.sessions:.0f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
