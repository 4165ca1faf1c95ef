"""
The ready-made policies compile and stay compiled (docs/policy-performance.md): with
FLVEDGE_JIT_LOG the server writes LuaJIT's trace events, and after a warm-up of every request kind
(token admitted and refused, the full chain admitted and refused at each list, operator code that
denies) more of the same requests cause no trace abort, and no trace start is ever blacklisted.
Also req.args, now looked up by name, still gives every argument to pairs() in a policy.
"""

import base64
import hashlib
import http.client
import os
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import Edge, EdgeTestCase
from fe_mmdb import write_country_db

SECRET = "s3cret"
UA, REF = "Mozilla/5.0 (X11; Linux x86_64) test", "https://www.example.com/player"


def token(path, expires):
    raw = hashlib.md5(("%d%s %s" % (expires, path, SECRET)).encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def nginx_signed(path, expires):
    """secure_link_md5 "$secure_link_expires$uri$remote_addr $http_x_key <secret>", X-Key absent."""
    raw = hashlib.md5(("%d%s127.0.0.1  %s" % (expires, path, SECRET)).encode()).digest()
    return "%s?md5=%s&expires=%d" % (path, base64.urlsafe_b64encode(raw).decode().rstrip("="), expires)


class PolicyJitTest(EdgeTestCase):
    def edge(self, resources, env=None):
        work = tempfile.mkdtemp(prefix="flvedge-jit-")
        os.makedirs(os.path.join(work, "www"))
        with open(os.path.join(work, "www", "f.bin"), "wb") as f:
            f.write(b"x" * 100)
        write_country_db(os.path.join(work, "geo.mmdb"), {"127.0.0.0/8": "DE"})
        text = "return {\n  listen = { \"127.0.0.1:0\" }, workers = 1, geoip_db = %r,\n  resources = {\n%s  },\n}\n" % (
            os.path.join(work, "geo.mmdb"), resources.replace("@WWW@", os.path.join(work, "www")))
        e = Edge(text, env=env)
        self.addCleanup(e.finish)
        return e, work

    def test_no_aborts_after_warmup_and_nothing_blacklisted(self):
        chain = """{ token = { secret = "%s" }, acl = {
            ip = { policy = "allow", values = { "192.0.2.0/24", "2001:db8::/32" } },
            referer = { policy = "deny", values = { "example.com", "*.example.com" }, empty = "deny" },
            user_agent = { policy = "allow", values = { "~*bot", "~*spider", "curl/7.0" } },
            country = { policy = "allow", values = { "KP", "IR" } } } }""" % SECRET
        resources = """    { name = "tok", prefix = "/tok/", type = "static", root = "@WWW@",
      policy = "secure_token", policy_settings = { secret = "%s" } },
    { name = "chain", prefix = "/chain/", type = "static", root = "@WWW@",
      policy = "chain", policy_settings = %s },
    { name = "deny", prefix = "/deny/", type = "static", root = "@WWW@",
      policy = { access = function(req) return 403 end } },
    { name = "ngx", prefix = "/ngx/", type = "static", root = "@WWW@",
      policy = "secure_token", policy_settings = { type = "nginx",
        secret_template = "$secure_link_expires$uri$remote_addr $http_x_key %s" } },
""" % (SECRET, chain, SECRET)
        log = os.path.join(tempfile.mkdtemp(prefix="flvedge-jitlog-"), "jit.log")
        edge, _ = self.edge(resources, env={"FLVEDGE_JIT_LOG": log})
        exp = int(time.time()) + 3600
        good = lambda p: "%s?md5=%s&expires=%d" % (p, token(p, exp), exp)  # noqa: E731
        kinds = [
            (good("/tok/f.bin"), UA, REF, 200),
            ("/tok/f.bin?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=%d" % exp, UA, REF, 403),
            (good("/chain/f.bin"), UA, REF, 200),
            (good("/chain/f.bin"), "Googlebot/2.1", REF, 403),
            (good("/chain/f.bin"), UA, "https://evil.example.org/", 403),
            ("/chain/f.bin?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=%d" % exp, UA, REF, 403),
            ("/deny/f.bin", UA, REF, 403),
            (nginx_signed("/ngx/f.bin", exp), UA, REF, 200),
            ("/ngx/f.bin?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=%d" % exp, UA, REF, 403),
        ]
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        self.addCleanup(conn.close)

        def play(rounds):
            for _ in range(rounds):
                for path, ua, ref, want in kinds:
                    conn.request("GET", path, headers={"User-Agent": ua, "Referer": ref})
                    r = conn.getresponse()
                    r.read()
                    self.assertEqual(r.status, want, path)

        play(400)  # warm-up: every kind well past LuaJIT's hot counts
        with open(log) as f:
            warm = f.read().splitlines()
        play(400)
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines and lines[0].startswith("build LuaJIT"), lines[:2])
        self.assertTrue(any(x.startswith("stop ") for x in warm), "no trace compiled at all")
        later = lines[len(warm):]
        self.assertEqual([x for x in later if x.startswith("abort ")], [], "aborts after the warm-up")
        self.assertEqual([x for x in lines if x.endswith(" blacklisted")], [], "blacklisted trace starts")

    def test_pairs_of_args_sees_every_argument(self):
        resources = """    { name = "args", prefix = "/args/", type = "static", root = "@WWW@",
      policy = { access = function(req)
        local first = req.args.b -- one looked up by name before pairs
        local names = {}
        for k, v in pairs(req.args) do names[#names + 1] = k .. "=" .. v end
        table.sort(names)
        return 403, first .. "|" .. table.concat(names, ",")
      end } },
"""
        edge, _ = self.edge(resources)
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/args/f.bin?a=1&b=x%20y&c&b=2&a+b=%41")
        r = conn.getresponse()
        self.assertEqual((r.status, r.read()), (403, b"2|a b=A,a=1,b=2,c="))


if __name__ == "__main__":
    unittest.main()
