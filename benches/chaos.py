#!/usr/bin/env python3
"""Chaos soak: 2 gateway replicas on one real Redis, mixed traffic, while Redis and one
replica are killed (SIGKILL) and restarted. Bounded: 3 minutes by default.

Redis runs with `--appendonly yes --appendfsync always` and restarts from the same
directory, so a write Redis acknowledged survives its SIGKILL: every session whose creation
the gateway acknowledged must still be valid at the end unless it was revoked.

Traffic (threads, each on a random replica): session creation in all three dialects
(Mottasl, Amity, Rapidly) and through the admin API, proxied calls (the echo upstream shows
the identity the gateway injected, checked against the session's), refresh rotations,
revocations, and calls with revoked tokens.

Prints: requests served, errors by kind and status (0 = no HTTP answer: connection refused
or reset), p50/p99 latency, sessions created vs still valid afterwards, requests accepted
after an acknowledged revocation (any lag, and beyond the bound), replica RSS over time.
Exits 1 if an acknowledged session was lost, a request was accepted after its revocation
+ the bound, a revoked session is still accepted at the end, an identity was wrong, or a
live session a replica had cached was refused while Redis was down ("cached live sessions
refused during an outage", which degraded mode must keep at 0).

The bound: a revocation reaches the other replica through Redis pub/sub (milliseconds);
if that broadcast is lost (Redis dies between the delete and the publish) the other
replica's cached entry still expires within the cache TTL. Bound = cache TTL + 1 s.

Usage: benches/chaos.py [--seconds 180] [--workers 8] [--chaos-every 30]
                        [--redis-down 3] [--replica-down 3] [--cache-ttl 5]
Needs: cargo, redis-server. Builds the release binary and the echo upstream first.
"""

import argparse
import base64
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from harness import ROOT, free_port, rss_kib, wait_port
ADMIN_TOKEN = "chaos-admin-token-0123456789"
MOTTASL_TOKEN = "chaos-mottasl-token"
MOTTASL_BUSINESS = "3f2b9c1e-8a47-4d5e-9b61-0c7d2e4f5a18"
AMITY_KEY = "chaos-amity-api-key"
AMITY_NETWORK = "chaos-network"
RAPIDLY_TOKEN = "chaos-rapidly-token"
RAPIDLY_WORKSPACE = "chaos-workspace"
RAPIDLY_CUSTOMERS = [str(uuid.UUID(int=0x5A0C0000_0000_4000_8000_000000000000 + i))
                     for i in range(20)]
KINDS = ("admin", "mottasl", "amity", "rapidly")


def call(port, method, path, headers=None, body=None, timeout=5):
    """(status, body bytes, seconds); status 0 when no HTTP answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, data, time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return 0, b"", time.monotonic() - t0
    finally:
        conn.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def sid_of(token):
    """The session id (`sid` claim) of an access token; the soak only reads, never trusts."""
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["sid"]


def config(tmp, i, proxy, admin, upstream, redis_port, cache_ttl):
    customers = "".join(f"""
[[dialects.rapidly.customers]]
id = "{c}"
workspace_id = "{RAPIDLY_WORKSPACE}"
email = "c{n}@example.com"
name = "Customer {n}"
""" for n, c in enumerate(RAPIDLY_CUSTOMERS))
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
[cache]
ttl_seconds = {cache_ttl}
[tokens]
signing_kid = "k"
default_ttl_seconds = 86400
[[tokens.keys]]
kid = "k"
algorithm = "HS256"
secret = "chaos-hs256-secret-0123456789abcdef0123"
[admin]
token = "{ADMIN_TOKEN}"
[rate_limits]
# Every client is 127.0.0.1 and revoked tokens are replayed on purpose: per-IP limits would
# measure themselves here. tests/rate_limits.rs covers them.
enabled = false
[dialects.mottasl]
enabled = true
[[dialects.mottasl.credentials]]
name = "chaos"
token = "{MOTTASL_TOKEN}"
businesses = ["{MOTTASL_BUSINESS}"]
roles = ["user"]
default_host_id = "chaos-host"
session_ttl_seconds = 86400
channels = ["WhatsApp"]
billing_source = "Stripe"
language = "en"
[dialects.amity]
enabled = true
[[dialects.amity.networks]]
name = "chaos"
network_id = "{AMITY_NETWORK}"
api_key = "{AMITY_KEY}"
default_host_id = "chaos-host"
role = "user"
session_ttl_seconds = 86400
[dialects.rapidly]
enabled = true
[[dialects.rapidly.workspaces]]
name = "chaos"
workspace_id = "{RAPIDLY_WORKSPACE}"
token = "{RAPIDLY_TOKEN}"
default_host_id = "chaos-host"
session_ttl_seconds = 86400
portal_base_url = "http://127.0.0.1:{proxy}/portal/{RAPIDLY_WORKSPACE}"
{customers}""")
    return path


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Cluster:
    """Redis, the echo upstream and the replicas, each restartable on its own ports."""

    def __init__(self, tmp, replicas, cache_ttl):
        self.tmp = tmp
        self.redis_port = free_port()
        self.redis = None
        self.start_redis()
        self.upstream_port = free_port()
        self.upstream = subprocess.Popen(
            [os.path.join(ROOT, "target/release/examples/echo_upstream"),
             f"127.0.0.1:{self.upstream_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ports = []
        self.procs = []
        for i in range(replicas):
            proxy, admin = free_port(), free_port()
            self.ports.append((proxy, admin))
            config(tmp, i, proxy, admin, self.upstream_port, self.redis_port, cache_ttl)
            self.procs.append(None)
            self.start_replica(i)
        for i in range(replicas):
            if not self.wait_ready(i, 30):
                sys.exit("a gateway did not become ready; logs in " + tmp)

    def start_redis(self):
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.redis_port):
            sys.exit("redis-server did not start")

    def start_replica(self, i):
        log = open(os.path.join(self.tmp, f"gw{i}.log"), "a")
        self.procs[i] = subprocess.Popen(
            [os.path.join(ROOT, "target/release/sessiongate"), "serve", "--config",
             os.path.join(self.tmp, f"gw{i}.toml")],
            stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})

    def wait_ready(self, i, seconds):
        """Ready and subscribed to revocation events."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            s, b, _ = call(self.ports[i][1], "GET", "/readyz", timeout=1)
            if s == 200 and json.loads(b).get("events") == "subscribed":
                return True
            time.sleep(0.1)
        return False

    def kill_redis(self):
        self.redis.send_signal(signal.SIGKILL)
        self.redis.wait()

    def kill_replica(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop(self):
        for p in [self.redis, self.upstream, *self.procs]:
            if p and p.poll() is None:
                p.kill()
                p.wait()


class Run:
    """Everything the traffic learns, under one lock."""

    def __init__(self, bound):
        self.lock = threading.Lock()
        self.bound = bound
        self.counts = {}           # (kind, status) -> n
        self.latency = {}          # kind -> [seconds] (answered requests only)
        self.sessions = []         # every acknowledged session (dicts, below)
        self.revoked = []          # acknowledged revocations, for replaying their tokens
        self.after_revocation = []  # lag of each 200 for a token after its revocation ack
        self.late = 0              # ... of those, answered beyond the bound
        self.lost_live = []        # live sessions refused during the run (401, or 404 on revoke)
        self.crashed = []          # threads that died on an exception
        self.wrong_identity = 0
        self.events = []           # (seconds since start, what)
        self.start = time.monotonic()
        self.redis_killed = None   # monotonic time of the last Redis SIGKILL
        self.redis_down = False    # between a Redis SIGKILL and its restart
        self.replica_started = {}  # proxy port -> monotonic time the replica (re)started
        self.cache_ttl = 0.0
        # Live sessions a replica had in its cache (a 200 from it, loaded before the
        # outage, within the cache TTL) and answered other than 200 while Redis was down:
        # degraded mode must serve them (issue 18); the stale window (30 s) outlasts the
        # outage.
        self.cached_refused = []
        self.cached_asked = 0      # requests for such sessions while Redis was down
        # Final status of each refresh retried after an unanswered or 5xx one.
        self.refresh_retries = []
        self.kills = {"redis": 0, "replica": 0}
        self.timeline = {}         # 10 s bucket -> [requests, unexpected answers, status 0]

    def record(self, kind, status, seconds, expected):
        with self.lock:
            self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
            if status:
                self.latency.setdefault(kind, []).append(seconds)
            bucket = self.timeline.setdefault(int((time.monotonic() - self.start) // 10),
                                              [0, 0, 0])
            bucket[0] += 1
            if status == 0:
                bucket[2] += 1
            elif status != expected:
                bucket[1] += 1


def create(run, rnd, cluster, kind):
    """Creates a session through `kind`; the session record, or None if not acknowledged."""
    proxy, admin = rnd.choice(cluster.ports)
    n = rnd.randrange(1 << 30)
    if kind == "admin":
        user, business = f"user-{n % 5000}", "chaos-business"
        s, b, t = call(admin, "POST", "/admin/sessions", bearer(ADMIN_TOKEN),
                       {"user_id": user, "business_id": business, "host_id": "chaos-host",
                        "role": "user"})
        ok = s == 201
        if ok:
            r = json.loads(b)
            token, refresh = r["access_token"], r["refresh_token"]
    elif kind == "mottasl":
        business = MOTTASL_BUSINESS
        s, b, t = call(proxy, "POST", "/v1/app/user.new.session?host_id=chaos-host",
                       bearer(MOTTASL_TOKEN),
                       {"business_id": business, "platform_type": "chaos",
                        "platform_id": str(n % 5000), "role": "user", "profile_name": "p",
                        "display_name": "P", "profile_image_url": "https://example.com/p.png"})
        ok = s == 200
        if ok:
            r = json.loads(b)
            token = r["headers"]["Authorization"].removeprefix("Bearer ")
            user, refresh = r["headers"]["x-hasura-user-id"], None
    elif kind == "amity":
        user, business = f"amity-{n % 5000}", AMITY_NETWORK
        s, b, t = call(proxy, "POST", "/api/v3/sessions", {"x-api-key": AMITY_KEY},
                       {"userId": user, "deviceId": str(uuid.UUID(int=rnd.getrandbits(128))),
                        "displayName": "A"})
        ok = s == 200
        if ok:
            r = json.loads(b)
            token, refresh = r["accessToken"], r["refreshToken"]
    else:
        user, business = rnd.choice(RAPIDLY_CUSTOMERS), RAPIDLY_WORKSPACE
        s, b, t = call(proxy, "POST", "/api/customer-sessions/", bearer(RAPIDLY_TOKEN),
                       {"customer_id": user, "return_url": "https://example.com/account"})
        ok = s == 201
        if ok:
            token, refresh = json.loads(b)["token"], None
    run.record("create:" + kind, s, t, 201 if kind in ("admin", "rapidly") else 200)
    if not ok:
        return None
    rec = {"kind": kind, "sid": sid_of(token), "token": token, "refresh": refresh,
           "user": user, "business": business, "state": "live", "revoked_at": None,
           "created": time.monotonic()}
    with run.lock:
        run.sessions.append(rec)
    return rec


def identity(body):
    """(user, business) the upstream received."""
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    return headers.get("x-hasura-user-id"), headers.get("x-hasura-business-id")


def proxied(run, rnd, cluster, rec):
    proxy, _ = rnd.choice(cluster.ports)
    with run.lock:
        token, revoked_at = rec["token"], rec["revoked_at"]
        down_before = run.redis_down
    t0 = time.monotonic()
    s, b, t = call(proxy, "GET", "/v1/graphql", bearer(token))
    with run.lock:
        down_after = run.redis_down
        started = run.replica_started.get(proxy, 0.0)
        cached = rec.setdefault("cached", {})
        if s == 200 and not down_before and not down_after:
            # Loaded into this replica's cache by this request unless an entry from an
            # earlier one is still there; an entry expires `cache_ttl` after it was loaded
            # (t0 is no later than the load, so `until` is no later than the expiry).
            ins, until = cached.get(proxy, (0.0, 0.0))
            if t0 >= until or ins < started:
                cached[proxy] = (t0, t0 + run.cache_ttl)
        elif (s != 0 and revoked_at is None and down_before and down_after
              and run.redis_killed is not None):
            ins, until = cached.get(proxy, (0.0, 0.0))
            if started <= ins < run.redis_killed and t0 + t < until - 0.2:
                run.cached_asked += 1
                if s != 200:
                    run.cached_refused.append((rec["kind"], rec["sid"], s))
    if revoked_at is None:
        run.record("proxied", s, t, 200)
    else:
        run.record("proxied:revoked", s, t, 401)
    if s == 401 and revoked_at is None:
        # Only its owner revokes a live session, and not concurrently: this one is gone.
        with run.lock:
            run.lost_live.append((rec["kind"], rec["sid"], "401 while live"))
    if s != 200:
        return
    if identity(b) != (rec["user"], rec["business"]):
        with run.lock:
            run.wrong_identity += 1
    if revoked_at is not None:
        # Sent `lag` after the acknowledgement; decided at the latest when it was answered.
        lag = t0 - revoked_at
        with run.lock:
            run.after_revocation.append(lag)
            if lag + t > run.bound:
                run.late += 1


def refresh(run, rnd, cluster, rec):
    proxy, _ = rnd.choice(cluster.ports)
    token = rec["refresh"]
    s, b, t = call(proxy, "POST", "/auth/refresh", None, {"refresh_token": token})
    run.record("refresh", s, t, 200)
    # Unanswered or 5xx: the rotation may have happened. Do what the API says and retry with
    # the same token (any replica) within the retry grace (10 s): the same successor, never
    # reuse. Up to 6 tries a second apart, which outlasts a Redis restart.
    tries = 0
    while s == 0 or s >= 500:
        if tries == 6:
            break
        tries += 1
        time.sleep(1)
        proxy, _ = rnd.choice(cluster.ports)
        s, b, t = call(proxy, "POST", "/auth/refresh", None, {"refresh_token": token})
        run.record("refresh retry", s, t, 200)
    with run.lock:
        if tries:
            run.refresh_retries.append(s)
        if s == 200:
            r = json.loads(b)
            rec["token"], rec["refresh"] = r["access_token"], r["refresh_token"]
        else:
            rec["refresh"] = None
            if tries and s == 401 and rec["state"] == "live" and not rec.get("revoking"):
                # The retry of a refresh the gateway did not answer logged the user out.
                rec["state"] = "lost"
                run.lost_live.append((rec["kind"], rec["sid"], "401 on refresh retry"))


def revoke(run, rnd, cluster, rec):
    _, admin = rnd.choice(cluster.ports)
    with run.lock:
        rec["revoking"] = True  # a refresh refused from now on may be this revocation
    s, _, t = call(admin, "DELETE", f"/admin/sessions/{rec['sid']}", bearer(ADMIN_TOKEN))
    run.record("revoke", s, t, 204)
    with run.lock:
        if s == 204:
            rec["state"], rec["revoked_at"] = "revoked", time.monotonic()
            run.revoked.append(rec)
        elif s == 404:
            # The store no longer had this acknowledged, never-revoked session.
            rec["state"] = "lost"
            run.lost_live.append((rec["kind"], rec["sid"], "404 on revoke"))
        else:
            rec["state"] = "revoke-unknown"  # no answer or 5xx: maybe deleted, maybe not


def guarded(run, name, fn, *args):
    """Runs a thread body; an exception is recorded (and fails the run), not lost."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - any failure of a thread must fail the soak
        with run.lock:
            run.crashed.append(f"{name}: {type(e).__name__}: {e}")


def worker(run, cluster, seed, stop):
    rnd = random.Random(seed)
    mine = []
    while time.monotonic() < stop:
        op = rnd.random()
        if op < 0.12 or not mine:
            rec = create(run, rnd, cluster, KINDS[rnd.randrange(len(KINDS))])
            if rec:
                mine.append(rec)
        elif op < 0.82:
            rec = rnd.choice(mine)
            with run.lock:
                if run.revoked and rnd.random() < 0.15:
                    rec = rnd.choice(run.revoked)
            proxied(run, rnd, cluster, rec)
        elif op < 0.92:
            rec = rnd.choice(mine)
            if rec["refresh"]:
                refresh(run, rnd, cluster, rec)
        else:
            rec = mine.pop(rnd.randrange(len(mine)))
            revoke(run, rnd, cluster, rec)
        if len(mine) > 200:
            mine.pop(0)  # still checked at the end; keeps the working set cache-sized


def chaos(run, cluster, start, stop, args):
    """Alternates: Redis killed and restarted, then replica 1 killed and restarted."""
    n = 0
    while True:
        at = start + (n + 1) * args.chaos_every
        if at + max(args.redis_down, args.replica_down) + 5 > stop:
            return
        time.sleep(max(0.0, at - time.monotonic()))
        if n % 2 == 0:
            run.events.append((time.monotonic() - start, "SIGKILL redis"))
            with run.lock:
                run.redis_down = True
            cluster.kill_redis()
            run.redis_killed = time.monotonic()
            run.kills["redis"] += 1
            time.sleep(args.redis_down)
            with run.lock:
                run.redis_down = False
            cluster.start_redis()
            run.events.append((time.monotonic() - start, "redis restarted (AOF)"))
        else:
            run.events.append((time.monotonic() - start, "SIGKILL replica 1"))
            cluster.kill_replica(1)
            run.kills["replica"] += 1
            time.sleep(args.replica_down)
            with run.lock:
                run.replica_started[cluster.ports[1][0]] = time.monotonic()
            cluster.start_replica(1)
            ready = cluster.wait_ready(1, 30)
            run.events.append((time.monotonic() - start,
                               "replica 1 restarted" + ("" if ready else " (NOT ready)")))
        n += 1


def sample_rss(cluster, start, stop, every, out):
    while time.monotonic() < stop:
        out.append((time.monotonic() - start,
                    [rss_kib(p.pid) if p.poll() is None else None for p in cluster.procs]))
        time.sleep(every)


def final_check(run, cluster):
    """Every acknowledged live session answers 200 with its identity on every replica;
    every acknowledged revocation answers 401 everywhere. Run once the cache TTL has passed
    since the traffic stopped, so every answer comes from Redis. Returns
    ({sid: (kind, status)} lost, [...] still accepted, wrong identities, records checked)."""
    lost, still_accepted, wrong, checked = {}, [], 0, 0
    lock = threading.Lock()
    todo = [r for r in run.sessions if r["state"] in ("live", "revoked")]
    expected = len(todo)

    def check():
        nonlocal wrong, checked
        while True:
            with lock:
                if not todo:
                    return
                rec = todo.pop()
            for proxy, _ in cluster.ports:
                s, b, _ = call(proxy, "GET", "/v1/graphql", bearer(rec["token"]))
                with lock:
                    if rec["state"] == "live" and s != 200:
                        lost[rec["sid"]] = (rec["kind"], s)
                    elif rec["state"] == "live" and identity(b) != (rec["user"],
                                                                    rec["business"]):
                        wrong += 1
                    elif rec["state"] == "revoked" and s != 401:
                        still_accepted.append((rec["kind"], rec["sid"], s))
            with lock:
                checked += 1

    threads = [threading.Thread(target=guarded, args=(run, "final check", check))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if checked != expected:
        run.crashed.append(f"final check: {checked} of {expected} sessions checked")
    return lost, still_accepted, wrong, checked


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--chaos-every", type=float, default=30)
    ap.add_argument("--redis-down", type=float, default=3)
    ap.add_argument("--replica-down", type=float, default=3)
    ap.add_argument("--cache-ttl", type=int, default=5)
    ap.add_argument("--rss-every", type=float, default=10)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "sessiongate",
                        "--example", "echo_upstream"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sessiongate-chaos-")
    cluster = Cluster(tmp, 2, args.cache_ttl)
    run = Run(bound=args.cache_ttl + 1.0)
    run.cache_ttl = float(args.cache_ttl)
    rss = []
    try:
        start = run.start = time.monotonic()
        stop = start + args.seconds
        threads = [threading.Thread(target=guarded,
                                    args=(run, f"worker {n}", worker, run, cluster, n, stop))
                   for n in range(args.workers)]
        threads.append(threading.Thread(
            target=guarded, args=(run, "chaos", chaos, run, cluster, start, stop, args)))
        threads.append(threading.Thread(
            target=guarded,
            args=(run, "rss", sample_rss, cluster, start, stop, args.rss_every, rss)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        rss.append((elapsed, [rss_kib(p.pid) for p in cluster.procs]))
        settled = all(cluster.wait_ready(i, 30) for i in range(len(cluster.ports)))
        time.sleep(args.cache_ttl + 1)
        lost, still_accepted, wrong_end, checked = final_check(run, cluster)
    finally:
        cluster.stop()

    total = sum(run.counts.values())
    answered = sum(n for (_, s), n in run.counts.items() if s)
    print(f"chaos soak: 2 replicas, {args.workers} workers, {args.seconds:.0f} s, "
          f"cache TTL {args.cache_ttl} s, Redis AOF appendfsync=always")
    for at, what in run.events:
        print(f"  t={at:6.1f} s  {what}")
    print(f"requests: {total} ({total / elapsed:.0f}/s), answered {answered}, "
          f"no answer (status 0) {total - answered}")
    print("by kind and status:")
    for (kind, status), n in sorted(run.counts.items()):
        print(f"  {kind:18} {status:3}: {n}")
    print("latency (answered requests):")
    every = []
    for kind in sorted(run.latency):
        v = run.latency[kind]
        every += v
        print(f"  {kind:18} n={len(v):6}  p50 {pct(v, 0.5) * 1000:7.2f} ms  "
              f"p99 {pct(v, 0.99) * 1000:7.2f} ms")
    print(f"  {'all':18} n={len(every):6}  p50 {pct(every, 0.5) * 1000:7.2f} ms  "
          f"p99 {pct(every, 0.99) * 1000:7.2f} ms")

    by_state = {}
    for rec in run.sessions:
        by_state[rec["state"]] = by_state.get(rec["state"], 0) + 1
    created = {k: sum(1 for r in run.sessions if r["kind"] == k) for k in KINDS}
    print(f"sessions acknowledged: {len(run.sessions)} "
          f"({', '.join(f'{k} {n}' for k, n in created.items())})")
    # Lost: refused while live during the run (401, or 404 when its owner revoked it), or
    # not accepted by some replica at the end.
    lost_sids = set(lost) | {sid for _, sid, _ in run.lost_live}
    live = by_state.get("live", 0)
    print(f"  live at the end: {live}, still valid on every replica: "
          f"{live - len(lost)}; lost during the run or at the end: {len(lost_sids)}")
    if run.redis_killed:
        before = [r for r in run.sessions
                  if r["state"] == "live" and r["created"] < run.redis_killed]
        print(f"  of those live, created before Redis's last SIGKILL: {len(before)}, valid: "
              f"{sum(1 for r in before if r['sid'] not in lost_sids)}")
    print(f"  revoked (acknowledged): {by_state.get('revoked', 0)}, still accepted at the "
          f"end: {len(still_accepted)}; revocations answered 0 or 5xx (outcome unknown, "
          f"skipped): {by_state.get('revoke-unknown', 0)}")
    for item in (sorted(lost.items()) + run.lost_live + still_accepted)[:10]:
        print(f"    {item}")
    lags = run.after_revocation
    print(f"accepted after an acknowledged revocation: {len(lags)}"
          + (f" (max lag {max(lags) * 1000:.0f} ms)" if lags else "")
          + f"; answered beyond the bound ({run.bound:.0f} s): {run.late}")
    print(f"wrong identity upstream: {run.wrong_identity + wrong_end}")
    print(f"cached live sessions refused during an outage: {len(run.cached_refused)} "
          f"(of {run.cached_asked} requests for them while Redis was down)")
    for item in run.cached_refused[:10]:
        print(f"    {item}")
    retried = run.refresh_retries
    print(f"refreshes retried with the same token after no answer or a 5xx: {len(retried)}"
          f" (then 200: {retried.count(200)}, 401: {retried.count(401)}, still no answer or"
          f" 5xx after 6 tries: {sum(1 for s in retried if s == 0 or s >= 500)})")
    print("per 10 s: requests, unexpected answers (e.g. 503), no answer (status 0):")
    for b, (n, unexpected, none) in sorted(run.timeline.items()):
        print(f"  t={b * 10:4}-{b * 10 + 10:<4} s  {n:6}  {unexpected:5}  {none:5}")
    print("replica RSS (MiB) over time (replica 0, replica 1; '-' = down):")
    for at, values in rss:
        cells = "  ".join("   -  " if v is None else f"{v / 1024:6.1f}" for v in values)
        print(f"  t={at:6.1f} s  {cells}")
    steady = [v[0] for t, v in rss if v[0] and t >= args.seconds / 4]
    if len(steady) >= 4:
        half = len(steady) // 2
        a, b = statistics.median(steady[:half]), statistics.median(steady[half:])
        print(f"  replica 0 (never killed): median {a / 1024:.1f} MiB in the first half "
              f"after warm-up, {b / 1024:.1f} MiB in the second ({(b - a) / a * 100:+.1f}%)")
    # A run that did not exercise what it reports on proves nothing.
    expected_kills = {"redis": 0, "replica": 0}
    n = 0
    while (n + 1) * args.chaos_every + max(args.redis_down, args.replica_down) + 5 \
            <= args.seconds:
        expected_kills["redis" if n % 2 == 0 else "replica"] += 1
        n += 1
    idle = [what for what, missing in (
        ("no session was acknowledged", not run.sessions),
        ("no revocation was acknowledged", not run.revoked),
        (f"chaos: {run.kills} of {expected_kills} kills done", run.kills != expected_kills),
        (f"final check covered {checked} sessions", checked == 0),
        ("no request for a cached session while Redis was down",
         run.kills["redis"] > 0 and run.cached_asked == 0),
    ) if missing]
    for what in run.crashed + idle:
        print("ERROR:", what)
    bad = (lost_sids or still_accepted or run.late or run.wrong_identity or wrong_end
           or run.cached_refused or not settled or run.crashed or idle)
    if not settled:
        print("the replicas did not become ready again after the chaos")
    print("FAIL" if bad else "OK", f"(logs in {tmp})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
