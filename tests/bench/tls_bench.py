#!/usr/bin/env python3
"""TLS benchmark: live fan-out over HTTPS against plain HTTP in one run, and full TLS handshakes
per second per core against Debian's nginx (OpenSSL) with the same certificate.

Runs on demand (never from ctest). The client is not fe_load (plain TCP only): every viewer is a
`curl` process (HTTPS verified against the test CA, or plain HTTP), the same client for both runs,
pinned to the cores the edge is not on; the edge's own CPU (/proc utime + stime) is what is
compared. Handshakes: `openssl s_time -new` (a full handshake per connection, no resumption), TLS
1.2 with ECDHE-ECDSA-AES128-GCM-SHA256 on both servers (Debian's mbedTLS 2.28 has no TLS 1.3),
each server on one worker pinned to core 0; the client on the other cores.

  python3 tests/bench/tls_bench.py --build build [--viewers 100] [--seconds 15] [--markdown]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from benchlib import cpu_seconds, free_port, stop, wait_port  # noqa: E402

CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    """A test CA and an ECDSA P-256 certificate for localhost signed by it."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh(["openssl", "req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "5",
                                            "-subj", "/CN=bench-ca"], d)
    sh(["openssl", "req"] + ec + ["-keyout", "site.key", "-out", "site.csr", "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    sh(["openssl", "x509", "-req", "-in", "site.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "site.crt", "-days", "5", "-extfile", "ext"], d)


def make_media(path, kbit):
    if os.path.exists(path):
        return
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60",
                    "-c:v", "libx264", "-preset", "ultrafast", "-b:v", f"{kbit}k", "-maxrate",
                    f"{kbit}k", "-bufsize", f"{kbit * 2}k", "-g", "50", "-c:a", "aac", "-b:a", "128k",
                    path], check=True)


def taskset(cores):
    return ["taskset", "-c", cores] if shutil.which("taskset") else []


def edge_start(binary, media, d, port, tls_port):
    cfg = os.path.join(d, "edge.lua")
    with open(cfg, "w") as f:
        f.write(f'''return {{
  workers = 1, log_level = "warn",
  listen = {{ "127.0.0.1:{port}",
             {{ "127.0.0.1:{tls_port}", tls = {{ cert = "{d}/site.crt", key = "{d}/site.key" }} }} }},
  limits = {{ max_connections = 100000, request_timeout = 30 }},
  resources = {{ {{ name = "live", prefix = "/live/", type = "live", origin = "file:{media}" }} }},
}}
''')
    p = subprocess.Popen(taskset("0") + [binary, "-c", cfg], stderr=open(os.path.join(d, "edge.log"), "w"))
    wait_port(port, p, "flvedge")
    wait_port(tls_port, p, "flvedge (TLS)")
    return p


def fanout(edge, url, viewers, seconds, cacert):
    """`viewers` curl processes on url for `seconds`: -> (edge CPU s, bytes, wall s)."""
    cmd = taskset(f"1-{os.cpu_count() - 1}") + ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}\n",
                                                "--cacert", cacert, "--max-time", str(seconds + 3), url]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(viewers)]
    time.sleep(3)  # joins done, steady state from here
    c0, t0 = cpu_seconds([edge.pid]), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds([edge.pid]), time.monotonic()
    total = 0
    for p in procs:
        out, _ = p.communicate()
        total += int(out.strip() or b"0")
    # bytes in the measured window: the stream's rate times the window (every viewer is realtime)
    return c1 - c0, total * (t1 - t0) / (seconds + 3), t1 - t0


def nginx_start(d, port):
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f'''worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/site.crt; ssl_certificate_key {d}/site.key;
    ssl_protocols TLSv1.2; ssl_ciphers {CIPHER}; ssl_session_tickets off; ssl_session_cache off;
    location / {{ return 404; }} }} }}
''')
    p = subprocess.Popen(taskset("0") + ["nginx", "-c", conf, "-p", d], stderr=subprocess.DEVNULL)
    wait_port(port, p, "nginx")
    return p


def worker_pids(master):
    """nginx: the master and its worker(s); flvedge: itself."""
    out = subprocess.run(["pgrep", "-P", str(master.pid)], stdout=subprocess.PIPE, text=True).stdout
    return [master.pid] + [int(x) for x in out.split()]


def handshakes(pids, port, seconds):
    """openssl s_time -new: full handshakes per second per server core."""
    c0 = cpu_seconds(pids)
    r = subprocess.run(taskset(f"1-{os.cpu_count() - 1}") +
                       ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
                        str(seconds), "-cipher", CIPHER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    c1 = cpu_seconds(pids)
    conns = 0
    for line in r.stdout.splitlines():
        if "connections in" in line and "real seconds" in line:
            conns = int(line.split()[0])
    return conns, c1 - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--viewers", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--kbit", type=int, default=4000, help="the stream's video bitrate")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    binary = os.path.join(args.build, "flvedge")
    d = tempfile.mkdtemp(prefix="flvedge-tlsbench-")
    make_certs(d)
    media = os.path.join(tempfile.gettempdir(), f"flvedge-tlsbench-{args.kbit}k.flv")
    make_media(media, args.kbit)
    port, tls_port, nginx_port = free_port(), free_port(), free_port()
    edge = edge_start(binary, media, d, port, tls_port)
    rows = []
    try:
        # warm the stream (the file is read and indexed once)
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://127.0.0.1:{port}/live/s.flv"])
        cacert = os.path.join(d, "ca.crt")
        res = {}
        for name, url in (("http", f"http://127.0.0.1:{port}/live/s.flv"),
                          ("https", f"https://localhost:{tls_port}/live/s.flv")):
            cpu, nbytes, wall = fanout(edge, url, args.viewers, args.seconds, cacert)
            gbps = nbytes * 8 / wall / 1e9
            res[name] = (cpu / wall, gbps)
            print(f"fan-out {name:5}: {args.viewers} viewers, {gbps * 1000:.0f} Mbit/s, edge CPU "
                  f"{cpu / wall * 100:.1f}% of a core, {cpu / wall / gbps:.3f} core per Gbit/s, "
                  f"~{args.viewers / (cpu / wall):.0f} viewers per core")
        (ch, gh), (cs, gs) = res["http"], res["https"]
        fan_ratio = (cs / gs) / (ch / gh)
        print(f"fan-out: HTTPS costs {fan_ratio:.2f}x plain HTTP's CPU per Gbit/s")
        rows.append(("fan-out, core per Gbit/s (HTTPS / HTTP)", f"{cs / gs:.3f} / {ch / gh:.3f}", f"{fan_ratio:.2f}x"))
        rows.append(("fan-out, viewers per core (HTTPS / HTTP)",
                     f"{args.viewers / cs:.0f} / {args.viewers / ch:.0f}", f"{ch / cs:.2f}x"))
        n_edge, c_edge = handshakes([edge.pid], tls_port, args.seconds)
        nginx = nginx_start(d, nginx_port)
        try:
            n_ngx, c_ngx = handshakes(worker_pids(nginx), nginx_port, args.seconds)
        finally:
            stop(nginx)
        he, hn = n_edge / max(c_edge, 1e-9), n_ngx / max(c_ngx, 1e-9)
        print(f"handshakes: flvedge {n_edge} in {args.seconds} s using {c_edge:.2f} CPU s = {he:.0f}/s per core; "
              f"nginx {n_ngx} using {c_ngx:.2f} CPU s = {hn:.0f}/s per core; flvedge/nginx {he / hn:.2f}")
        rows.append(("full handshakes per second per core (flvedge / nginx)", f"{he:.0f} / {hn:.0f}", f"{he / hn:.2f}x"))
    finally:
        stop(edge)
    if args.markdown:
        print("\n| measure | value | ratio |\n| --- | --- | --- |")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    shutil.rmtree(d, True)


if __name__ == "__main__":
    main()
