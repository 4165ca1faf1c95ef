#!/usr/bin/env python3
"""Policy cost: wrk against flvedge (no policy, secure token, the full chain) and against nginx with
Debian's lua module doing the same token check in access_by_lua_block, side by side in one run.

Each server runs one event loop pinned to core 0; wrk runs on core 1. The cost of a request is the
server's CPU time (from /proc) divided by the requests wrk completed, so a server that is not
saturated is still measured fairly. Runs on demand (never from ctest).

  python3 tests/bench/policy_bench.py --build build
"""
import argparse
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from fe_mmdb import write_country_db  # noqa: E402  (the tests' own small .mmdb writer)

sys.path.insert(0, HERE)
from benchlib import cpu_seconds, free_port, stop, wait_port  # noqa: E402

SECRET = "s3cret"
BODY = b"x" * 1024


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def token(path, expires):
    raw = hashlib.md5(f"{expires}{path} {SECRET}".encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def wrk(url, seconds, conns, headers):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return reqs, rps, int(non2xx.group(1)) if non2xx else 0, errors.group(1) if errors else ""


def measure(name, pids, url, args, headers, expect_denied):
    c0 = cpu_seconds(pids)
    reqs, rps, non2xx, errors = wrk(url, args.seconds, args.connections, headers)
    used = cpu_seconds(pids) - c0
    us = used / reqs * 1e6
    ok = (non2xx == reqs) if expect_denied else (non2xx == 0)
    flag = "" if ok and not errors else f"  UNEXPECTED: {non2xx} non-2xx of {reqs} {errors}"
    print(f"{name:<44} {rps:>9.0f} req/s  server CPU {used / args.seconds * 100:5.1f} %  "
          f"{us:6.2f} us/request{flag}", flush=True)
    return us, rps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--seconds", type=int, default=4, help="per scenario and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    binary = os.path.join(args.build, "flvedge")
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"policy_bench: {tool} missing (apt-get install wrk nginx-light libnginx-mod-http-lua)")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
        raise SystemExit("policy_bench: nginx's lua module missing (apt-get install libnginx-mod-http-lua)")

    work = tempfile.mkdtemp(prefix="flvedge-pbench-")
    www = os.path.join(work, "www")
    for d in ("open", "tok", "chain"):
        os.makedirs(os.path.join(www, d))
        with open(os.path.join(www, d, "f.bin"), "wb") as f:
            f.write(BODY)
    write_country_db(os.path.join(work, "geo.mmdb"), {"127.0.0.0/8": "DE"})
    exp = int(time.time()) + 3600
    good = f"?md5={{}}&expires={exp}"
    bad = f"?md5=AAAAAAAAAAAAAAAAAAAAAA&expires={exp}"
    ua, ref = "Mozilla/5.0 (X11; Linux x86_64) bench", "https://www.example.com/player"
    headers = [f"User-Agent: {ua}", f"Referer: {ref}"]

    # flvedge: static resources, no policy / secure_token / the full chain.
    port = free_port()
    chain = """{
        token = { secret = "%s" },
        acl = {
          ip = { policy = "allow", values = { "192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32" } },
          referer = { policy = "deny", values = { "example.com", "*.example.com" }, empty = "deny" },
          user_agent = { policy = "allow", values = { "~*bot", "~*spider", "curl/7.0" } },
          country = { policy = "allow", values = { "KP", "IR" } },
        } }""" % SECRET
    conf = os.path.join(work, "flvedge.lua")
    with open(conf, "w") as f:
        f.write(f"""return {{
  listen = {{ "127.0.0.1:{port}" }}, workers = 1, log_level = "warn", geoip_db = "{work}/geo.mmdb",
  resources = {{
    {{ name = "open", prefix = "/open/", type = "static", root = "{www}/open" }},
    {{ name = "tok", prefix = "/tok/", type = "static", root = "{www}/tok",
       policy = "secure_token", policy_settings = {{ secret = "{SECRET}" }} }},
    {{ name = "chain", prefix = "/chain/", type = "static", root = "{www}/chain",
       policy = "chain", policy_settings = {chain} }},
    {{ name = "deny", prefix = "/deny/", type = "static", root = "{www}/open",
       policy = {{ access = function(req) return 403 end }} }},
  }},
}}
""")
    edge = subprocess.Popen(["taskset", "-c", "0", binary, "-c", conf],
                            stderr=open(os.path.join(work, "flvedge.log"), "w"))
    # nginx: one worker, the same files, the same token check in Lua.
    nport = free_port()
    nconf = os.path.join(work, "nginx.conf")
    with open(nconf, "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
user root;  # the files are in a private temporary directory
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{nport};
    root {www};
    location /open/ {{ }}
    location /tok/ {{
      access_by_lua_block {{
        local args = ngx.req.get_uri_args()
        local md5, expires = args.md5, args.expires
        if type(md5) ~= "string" or type(expires) ~= "string" or not expires:find("^%d+$") then
          return ngx.exit(403)
        end
        local want = ngx.encode_base64(ngx.md5_bin(expires .. ngx.var.uri .. " {SECRET}"))
        want = want:gsub("[+/=]", {{ ["+"] = "-", ["/"] = "_", ["="] = "" }})
        if want ~= md5 then return ngx.exit(403) end
        if tonumber(expires) <= ngx.time() then return ngx.exit(410) end
      }}
    }}
    location /deny/ {{ access_by_lua_block {{ return ngx.exit(403) }} }}
  }}
}}
""")
    ngx = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", work, "-c", nconf],
                           stderr=open(os.path.join(work, "nginx.log"), "w"))
    try:
        wait_port(port, edge, "policy_bench: flvedge")
        wait_port(nport, ngx, "policy_bench: nginx")
        ngx_pids = [ngx.pid] + children(ngx.pid)
        fe = f"http://127.0.0.1:{port}"
        ng = f"http://127.0.0.1:{nport}"
        print(f"policy_bench: servers on core 0, wrk -t1 -c{args.connections} on core 1, "
              f"{args.seconds} s each, 1 KiB file; logs in {work}")
        scenarios = [
            ("fe_open", "flvedge  admitted, no policy", [edge.pid], f"{fe}/open/f.bin", headers, False),
            ("ng_open", "nginx    admitted, no lua", ngx_pids, f"{ng}/open/f.bin", headers, False),
            ("fe_tok", "flvedge  admitted, secure_token", [edge.pid],
             f"{fe}/tok/f.bin" + good.format(token("/tok/f.bin", exp)), headers, False),
            ("ng_tok", "nginx    admitted, token in access_by_lua", ngx_pids,
             f"{ng}/tok/f.bin" + good.format(token("/tok/f.bin", exp)), headers, False),
            ("fe_chain", "flvedge  admitted, full chain", [edge.pid],
             f"{fe}/chain/f.bin" + good.format(token("/chain/f.bin", exp)), headers, False),
            ("fe_deny", "flvedge  denied 403, policy that always denies", [edge.pid],
             f"{fe}/deny/f.bin", headers, True),
            ("ng_deny", "nginx    denied 403, lua that always denies", ngx_pids, f"{ng}/deny/f.bin",
             headers, True),
            ("fe_tokbad", "flvedge  denied 403, bad token", [edge.pid], f"{fe}/tok/f.bin" + bad, headers, True),
            ("ng_tokbad", "nginx    denied 403, bad token", ngx_pids, f"{ng}/tok/f.bin" + bad, headers, True),
            ("fe_chainbad", "flvedge  denied 403, chain: bad token", [edge.pid], f"{fe}/chain/f.bin" + bad,
             headers, True),
            ("fe_chainua", "flvedge  denied 403, chain: UA (3rd list)", [edge.pid],
             f"{fe}/chain/f.bin" + good.format(token("/chain/f.bin", exp)),
             ["User-Agent: Googlebot/2.1", f"Referer: {ref}"], True),
        ]
        # Rounds interleave the scenarios so that a noisy neighbour hits them all alike; the
        # median round of each is reported.
        runs = {k: [] for k, *_ in scenarios}
        for rnd in range(args.rounds):
            print(f"round {rnd + 1} of {args.rounds}", flush=True)
            for k, name, pids, url, hdrs, denied in scenarios:
                runs[k].append(measure(name, pids, url, args, hdrs, denied))
        print(f"\nmedian of {args.rounds} rounds:")
        r = {}
        for k, name, *_ in scenarios:
            by_us = sorted(runs[k])
            r[k] = by_us[len(by_us) // 2]
            print(f"{name:<44} {r[k][1]:>9.0f} req/s  {r[k][0]:6.2f} us/request")
        us = lambda k: r[k][0]  # noqa: E731
        rps = lambda k: r[k][1]  # noqa: E731
        print()
        print(f"full chain, admitted: {us('fe_chain') - us('fe_open'):+.2f} us/request over no policy")
        print(f"secure token, admitted: flvedge {us('fe_tok') - us('fe_open'):+.2f} us, "
              f"nginx+lua {us('ng_tok') - us('ng_open'):+.2f} us over their own no-policy figure")
        print(f"req/s flvedge / nginx: no policy {rps('fe_open') / rps('ng_open'):.2f}x, "
              f"token admitted {rps('fe_tok') / rps('ng_tok'):.2f}x, "
              f"full chain vs nginx token {rps('fe_chain') / rps('ng_tok'):.2f}x, "
              f"bad token 403 {rps('fe_tokbad') / rps('ng_tokbad'):.2f}x, "
              f"always-deny 403 {rps('fe_deny') / rps('ng_deny'):.2f}x")
    finally:
        for p in (edge, ngx):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
