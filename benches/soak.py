#!/usr/bin/env python3
"""Lifecycle soak: N gateway replicas on one real Redis, mixed traffic for a bounded time.

Traffic (threads, round-robin over replicas): session creation (admin API), proxied calls,
refresh rotations and revocations. A probe thread repeatedly revokes a session that every
replica has cached, on one replica, and polls the others until they refuse it.

Prints: requests by kind and status, revocation lag p50/p99/max, and the number of requests
accepted after their session's revocation + the lag bound (must be 0).

Usage: benches/soak.py [--replicas 3] [--seconds 30] [--bound-ms 1000]
Needs: cargo, redis-server. Builds the release binary and the echo upstream first.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import http.client

from harness import ROOT, free_port, wait_port
ADMIN_TOKEN = "soak-admin-token-0123456789"


def call(port, method, path, token=None, body=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    except OSError:
        return 0, b""
    finally:
        conn.close()


def config(tmp, i, proxy, admin, upstream, redis_port):
    path = os.path.join(tmp, f"gw{i}.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{proxy}"
admin_listen = "127.0.0.1:{admin}"
threads = 2
[upstream]
url = "http://127.0.0.1:{upstream}"
[store]
backend = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
[tokens]
signing_kid = "k"
[[tokens.keys]]
kid = "k"
algorithm = "HS256"
secret = "soak-hs256-secret-0123456789abcdef0123"
[admin]
token = "{ADMIN_TOKEN}"
[rate_limits]
# Every soak client comes from 127.0.0.1 and revoked tokens are probed on purpose: the
# per-IP limits would measure themselves, not revocation. tests/rate_limits.rs covers them.
enabled = false
""")
    return path


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.lags = []
        self.late_accepts = 0

    def count(self, kind, status):
        with self.lock:
            key = (kind, status)
            self.counts[key] = self.counts.get(key, 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--bound-ms", type=float, default=1000)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "sessiongate",
                    "--example", "echo_upstream"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sessiongate-soak-")
    procs = []
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        upstream = free_port()
        procs.append(subprocess.Popen(
            [os.path.join(ROOT, "target/release/examples/echo_upstream"),
             f"127.0.0.1:{upstream}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        replicas = []
        for i in range(args.replicas):
            proxy, admin = free_port(), free_port()
            cfg = config(tmp, i, proxy, admin, upstream, redis_port)
            log = open(os.path.join(tmp, f"gw{i}.log"), "w")
            procs.append(subprocess.Popen(
                [os.path.join(ROOT, "target/release/sessiongate"), "serve", "--config", cfg],
                stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"}))
            replicas.append((proxy, admin))
        for p, a in replicas:
            if not (wait_port(p) and wait_port(a)):
                sys.exit("a gateway did not start; logs in " + tmp)
        for _, a in replicas:
            deadline = time.time() + 10
            while time.time() < deadline:
                s, b = call(a, "GET", "/readyz")
                if s == 200 and json.loads(b).get("events") == "subscribed":
                    break
                time.sleep(0.1)

        stats = Stats()
        stop = time.time() + args.seconds
        revoked_at = {}  # access token -> monotonic time its revocation was acknowledged
        revoked_list = []
        rlock = threading.Lock()

        def create(rep):
            _, admin = rep
            s, b = call(admin, "POST", "/admin/sessions", ADMIN_TOKEN,
                        {"user_id": f"u{random.randrange(1000)}", "business_id": "b",
                         "host_id": "h", "role": "user"})
            stats.count("create", s)
            return json.loads(b) if s == 201 else None

        def worker(seed):
            rnd = random.Random(seed)
            mine = []
            while time.time() < stop:
                rep = rnd.choice(replicas)
                op = rnd.random()
                if op < 0.1 or not mine:
                    s = create(rep)
                    if s:
                        mine.append(s)
                elif op < 0.85:
                    s = rnd.choice(mine)
                    with rlock:
                        if revoked_list and rnd.random() < 0.2:
                            s = rnd.choice(revoked_list)
                    t0 = time.monotonic()
                    status, _ = call(rep[0], "GET", "/v1/graphql", s["access_token"])
                    stats.count("proxied", status)
                    if status == 200:
                        with rlock:
                            at = revoked_at.get(s["access_token"])
                        if at is not None and t0 - at > args.bound_ms / 1000:
                            with stats.lock:
                                stats.late_accepts += 1
                elif op < 0.95:
                    s = rnd.choice(mine)
                    status, b = call(rep[0], "POST", "/auth/refresh", None,
                                     {"refresh_token": s["refresh_token"]})
                    stats.count("refresh", status)
                    if status == 200:
                        r = json.loads(b)
                        s["access_token"], s["refresh_token"] = r["access_token"], r["refresh_token"]
                else:
                    s = mine.pop(rnd.randrange(len(mine)))
                    status, _ = call(rep[1], "DELETE", f"/admin/sessions/{s['session_id']}",
                                     ADMIN_TOKEN)
                    stats.count("revoke", status)
                    if status == 204:
                        # Acknowledged: from now + the bound, no replica may accept it.
                        with rlock:
                            revoked_at[s["access_token"]] = time.monotonic()
                            revoked_list.append(s)

        def probe():
            i = 0
            while time.time() < stop:
                s = create(replicas[0])
                if not s:
                    continue
                for p, _ in replicas:  # cached everywhere
                    call(p, "GET", "/v1/graphql", s["access_token"])
                revoker = replicas[i % len(replicas)]
                i += 1
                t0 = time.monotonic()
                call(revoker[1], "DELETE", f"/admin/sessions/{s['session_id']}", ADMIN_TOKEN)
                for p, _ in replicas:
                    while True:
                        status, _ = call(p, "GET", "/v1/graphql", s["access_token"])
                        lag = time.monotonic() - t0
                        if status == 401:
                            stats.lags.append(lag)
                            break
                        if lag > 5:
                            stats.lags.append(lag)
                            break
                time.sleep(0.05)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        threads.append(threading.Thread(target=probe))
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        total = sum(stats.counts.values())
        print(f"replicas={args.replicas} seconds={args.seconds} requests={total} "
              f"({total / args.seconds:.0f}/s)")
        for (kind, status), n in sorted(stats.counts.items()):
            print(f"  {kind:8} {status}: {n}")
        lags = sorted(stats.lags)
        if lags:
            q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))] * 1000
            print(f"revocation lag over {len(lags)} refusals: p50 {q(0.5):.1f} ms, "
                  f"p99 {q(0.99):.1f} ms, max {lags[-1] * 1000:.1f} ms")
        print(f"accepted after revocation + {args.bound_ms:.0f} ms: {stats.late_accepts}")
        bad = stats.late_accepts > 0 or (lags and lags[-1] * 1000 > args.bound_ms)
        sys.exit(1 if bad else 0)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
