#!/usr/bin/env python3
"""What a held HTTP/2 stream and a pending TLS handshake cost the gateway (issue 19).

Starts the echo upstream and the release gateway on the shipped config with TLS (the test
certificates) and deadlines long enough to outlast the run, then measures, each against a
settled baseline:

1. `--handshakes` TCP connections to the TLS listener that never send a ClientHello: the
   gateway's RSS and open descriptors per connection;
2. `--streams` bodiless HTTP/2 POSTs to a public path (HEADERS without END_STREAM, then
   nothing), 50 per connection: RSS and descriptors per stream, and how many upstream
   connections they hold (descriptors of the echo upstream).

Frames are written by hand (HPACK literals without indexing), so nothing but Python's
standard library is needed.

    python3 benches/h2_held.py                          # builds the release binary first
    python3 benches/h2_held.py --no-build --bin /tmp/sessiongate-old   # another build
"""

import argparse
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

from harness import ROOT, free_port, rss_kib, wait_port

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


def hpack_int(n, prefix_bits=7):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([n])
    out = [limit]
    n -= limit
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def headers_block(pairs):
    """Literal header fields without indexing, new names, no Huffman coding."""
    out = b""
    for name, value in pairs:
        out += b"\x00" + hpack_int(len(name)) + name + hpack_int(len(value)) + value
    return out


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class H2:
    """One h2 connection over TLS, used from one thread (an SSL socket is not safe to read
    and write from two): the server's SETTINGS are acknowledged at once, and whatever it
    sent later is read by `drain`."""

    def __init__(self, port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            sys.exit("the gateway did not agree to h2")
        self.send(PREFACE + frame(0x4, 0, 0) + frame(0x4, 0x1, 0))
        self.buf = b""
        self.statuses = 0

    def send(self, data):
        self.sock.sendall(data)

    def drain(self):
        """Reads what has arrived; counts response HEADERS frames."""
        self.sock.settimeout(0.05)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except (OSError, ssl.SSLError):
            pass
        self.sock.settimeout(None)
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            if self.buf[3] == 0x1:
                self.statuses += 1
            self.buf = self.buf[9 + length:]

    def post(self, stream, port):
        block = headers_block([(b":method", b"POST"), (b":scheme", b"https"),
                               (b":path", b"/public/held"),
                               (b":authority", f"localhost:{port}".encode()),
                               (b"content-type", b"application/json")])
        self.send(frame(0x1, 0x4, stream, block))  # END_HEADERS, no END_STREAM

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def settle(pid, seconds):
    time.sleep(seconds)
    return rss_kib(pid), fds(pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=400)
    ap.add_argument("--handshakes", type=int, default=400)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/sessiongate"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--settle", type=float, default=5)
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--quiet", "--release", "--bin", "sessiongate",
                        "--example", "echo_upstream"], cwd=ROOT, check=True)
    tls = os.path.join(ROOT, "tests/fixtures/tls")
    with open(os.path.join(ROOT, "config/sessiongate.toml")) as f:
        text = f.read()
    # Deadlines that outlast the run: what is measured is what a stream or handshake
    # costs while it is still within them.
    text = text.replace("[server]\n", "[server]\ntls = { cert_file = \"%s\", key_file = \"%s\" }\n"
                        % (os.path.join(tls, "proxy-a.pem"), os.path.join(tls, "proxy-a-key.pem")))
    text = text.replace("header_read_timeout_ms = 10000", "header_read_timeout_ms = 120000")
    text = text.replace("body_read_timeout_ms = 30000", "body_read_timeout_ms = 120000")
    text = text.replace("# tls_handshake_timeout_ms = 10000", "tls_handshake_timeout_ms = 120000")
    upstream, proxy, admin = free_port(), free_port(), free_port()
    procs = []
    conns = []
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "sessiongate.toml")
        with open(config, "w") as f:
            f.write(text)
        echo = subprocess.Popen([os.path.join(ROOT, "target/release/examples/echo_upstream"),
                                 f"127.0.0.1:{upstream}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(echo)
        env = {**os.environ, "RUST_LOG": "warn", "SESSIONGATE_LISTEN": f"127.0.0.1:{proxy}",
               "SESSIONGATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
               "SESSIONGATE_UPSTREAM": f"http://127.0.0.1:{upstream}"}
        gw = subprocess.Popen([args.bin, "serve", "--config", config], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gw)
        try:
            if not (wait_port(proxy) and wait_port(upstream)):
                sys.exit("the gateway or the upstream did not start")
            # Warm up: a few h2 connections with a request each.
            for _ in range(20):
                c = H2(proxy)
                c.send(frame(0x1, 0x5, 1, headers_block([
                    (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/public/warm"),
                    (b":authority", b"localhost")])))
                time.sleep(0.02)
                c.close()

            rss0, fd0 = settle(gw.pid, args.settle)
            silent = []
            for i in range(args.handshakes):
                s = socket.socket()
                s.bind((f"127.0.0.{2 + i % 200}", 0))
                s.connect(("127.0.0.1", proxy))
                silent.append(s)
            rss1, fd1 = settle(gw.pid, args.settle)
            for s in silent:
                s.close()
            print(f"{args.handshakes} TCP connections to the TLS listener sending nothing: "
                  f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
                  f"{(rss1 - rss0) * 1024 / args.handshakes / 1024:.1f} KiB and "
                  f"{(fd1 - fd0) / args.handshakes:.2f} descriptors each")

            rss0, fd0 = settle(gw.pid, args.settle)
            echo_fd0 = fds(echo.pid)
            per_conn = 50
            for i in range((args.streams + per_conn - 1) // per_conn):
                c = H2(proxy)
                conns.append(c)
                for k in range(min(per_conn, args.streams - i * per_conn)):
                    c.post(1 + 2 * k, proxy)
            rss1, fd1 = settle(gw.pid, args.settle)
            upstream_conns = fds(echo.pid) - echo_fd0
            for c in conns:
                c.drain()
            answered = sum(c.statuses for c in conns)
            print(f"{args.streams} bodiless h2 POSTs on {len(conns)} connections "
                  f"(answered meanwhile: {answered}): RSS {rss0 / 1024:.1f} -> "
                  f"{rss1 / 1024:.1f} MiB, {(rss1 - rss0) * 1024 / args.streams / 1024:.1f} KiB "
                  f"and {(fd1 - fd0 - len(conns)) / args.streams:.2f} descriptors per stream "
                  f"(besides its connection's); upstream connections held: {upstream_conns}")
        finally:
            for c in conns:
                c.close()
            for p in procs:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
