"""
Policy hooks against the real binary (docs/policies.md): access admits and denies with status, body
and headers; every request field a policy can read; errors and runaway scripts give 500 and never
take the process down; the origin phase picks and fails over origins; log adds access-log fields
and shares req.ctx with access; quick mode's --policy; -t rejects a broken policy.
"""

import json
import os
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import BIN, T, EdgeTestCase, HttpConn, Synth, free_port, run, wait_until
from fe_mmdb import write_country_db

HOOKS = r'''
local seen = 0
return {
  access = function(req)
    local a = req.args
    if a.deny then
      return tonumber(a.deny), "denied by policy\n", { ["X-Policy"] = "hooks", ["Retry-After"] = 7 }
    end
    if a.echo then
      local fields = { req.method, req.host, req.path, req.query, req.stream or "-", req.resource,
        req.client_ip, req.server_ip, req.country or "-", req.headers["USER-AGENT"],
        req.headers.x_custom or "-", a.echo, tostring(math.floor(req.time)) }
      return 418, table.concat(fields, "|") .. "\n"
    end
    if a.fail then
      local t = nil
      return t.field  -- indexing nil
    end
    if a.spin then
      while true do seen = seen + 1 end
    end
    if a.badstatus then return "teapot" end
    if a.hdr then return 403, "denied\n", { [a.hdr] = a.val or "x" } end
    if a.longheader then return 302, "moved\n", { Location = "/" .. string.rep("x", 3000) } end
    req.ctx.tag = a.tag
  end,
  log = function(req, res)
    return { tag = req.ctx.tag or "none", st = res.status, cs = res.cache_status }
  end,
}
'''

FAILOVER = r'''
return {
  origin = function(req, attempt, last_error)
    errors = errors or {}
    errors[#errors + 1] = tostring(last_error)
    if attempt == 1 then return os.getenv("FE_DEAD") end
    if attempt == 2 then return os.getenv("FE_GOOD") .. "/live/" end
    return nil
  end,
  access = function(req)
    if req.args.errors then return 299, table.concat(errors or {}, ",") end
  end,
}
'''

# The origin URL built from a query argument (percent-decoded): what a careless policy does.
INJECT = r'''
return {
  origin = function(req, attempt)
    if req.args.dead_first and attempt == 1 then return os.getenv("FE_DEAD") end
    if req.args.long then return os.getenv("FE_GOOD") .. "/" .. string.rep("a", 4070) end
    return os.getenv("FE_GOOD") .. "/live/s.flv?x=" .. req.args.x
  end,
}
'''


def dead_url():
    return "http://127.0.0.1:%d/live/" % free_port()


class AccessAndLogTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth())
        geo = os.path.join(tempfile.mkdtemp(prefix="flvedge-geo-"), "geo.mmdb")
        write_country_db(geo, {"127.0.0.2/32": "DE"})
        self.edge = self.start_edge({
            "geoip_db": geo,
            "access_log": "access.log",
            "lua_budget": 200000,
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                           "origin": self.origin.url("/live/"), "policy": "hooks.lua"}],
        }, files={"hooks.lua": HOOKS})

    def test_admit_plays(self):
        v = self.viewer(self.edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_tags(5)

    def test_deny_with_status_body_headers(self):
        r = self.get(self.edge, "/flv/s.flv?deny=451")
        self.assertStatus(r, 451)
        self.assertEqual(r.body, b"denied by policy\n")
        self.assertEqual(r.header("X-Policy"), "hooks")
        self.assertEqual(r.header("Retry-After"), "7")
        self.assertEqual(self.origin.connections("/live/s.flv"), 0, "a denied request reached the origin")

    def test_long_deny_header_is_sent_whole(self):
        r = self.get(self.edge, "/flv/s.flv?longheader=1")
        self.assertStatus(r, 302)
        self.assertEqual(r.header("Location"), "/" + "x" * 3000)
        self.assertEqual(r.body, b"moved\n")

    def test_denial_that_would_break_the_head_is_500(self):
        # A NUL cut the head where %s stopped; CR, LF and other control bytes end it early; a
        # framing header contradicts the server's; a 1xx is no answer.
        cases = [("nul", "hdr=X-A&val=a%00b", "control byte"),
                 ("crlf", "hdr=X-A&val=a%0D%0AX-Injected:%201", "control byte"),
                 ("soh", "hdr=X-A&val=a%01b", "control byte"),
                 ("del", "hdr=X-A&val=a%7Fb", "control byte"),
                 ("100", "deny=100", "status must be"), ("103", "deny=103", "status must be")]
        cases += [(name, "hdr=%s&val=0" % name, "frames the answer")
                  for name in ("Content-Length", "transfer-encoding", "Connection", "Upgrade",
                               "Keep-Alive", "Trailer")]
        for name, query, logged in cases:
            with self.subTest(case=name):
                before = len(self.edge.log_lines("access hook", logged))
                r = self.get(self.edge, "/flv/s.flv?" + query)
                self.assertStatus(r, 500)
                self.assertEqual(len(self.edge.log_lines("access hook", logged)), before + 1,
                                 "one clear log line; tail:\n%s" % self.edge.stderr_tail(1500))
        # A tab is fine in a value.
        r = self.get(self.edge, "/flv/s.flv?hdr=X-A&val=a%09b")
        self.assertStatus(r, 403)
        self.assertEqual(r.header("X-A"), "a\tb")

    def test_204_and_304_denials_have_no_body(self):
        # On one keep-alive connection: a body after a 204 or 304 would be read as the next
        # response's head.
        c = HttpConn(self.edge.port, "/flv/s.flv?deny=204")
        self.addCleanup(c.close)
        for status, nxt in ((204, b"304"), (304, b"403")):
            r = c.read_head(T(5))
            self.assertEqual(r.status, status, r)
            self.assertIsNone(r.header("Content-Length"), r)
            self.assertEqual(r.header("X-Policy"), "hooks")
            c.send(b"GET /flv/s.flv?deny=%s HTTP/1.1\r\nHost: x\r\n\r\n" % nxt)
        r = c.read_head(T(5))
        self.assertEqual(r.status, 403, r)
        self.assertEqual(c.read_body_all(T(5)), b"denied by policy\n")

    def test_request_fields(self):
        before = int(time.time())
        r = self.get(self.edge, "/flv/s.flv?echo=a%20b&x=1", headers={
            "Host": "Edge.Example.com:8080", "User-Agent": "UA/1.0", "X-Custom": "yes"})
        self.assertStatus(r, 418)
        f = r.body.decode().rstrip("\n").split("|")
        self.assertEqual(f[:12], ["GET", "edge.example.com", "/flv/s.flv", "echo=a%20b&x=1", "s", "live",
                                  "127.0.0.1", "127.0.0.1", "-", "UA/1.0", "yes", "a b"])
        self.assertTrue(before - 1 <= int(f[12]) <= time.time() + 1, f[12])

    def test_country_from_geo_db(self):
        r = self.get(self.edge, "/flv/s.flv?echo=1", source="127.0.0.2")
        self.assertStatus(r, 418)
        f = r.body.decode().split("|")
        self.assertEqual((f[6], f[8]), ("127.0.0.2", "DE"))

    def test_error_gives_500_and_script_line(self):
        r = self.get(self.edge, "/flv/s.flv?fail=1")
        self.assertStatus(r, 500)
        line = HOOKS.split("\n").index("      return t.field  -- indexing nil") + 1
        self.edge.wait_log("hooks.lua:%d: attempt to index" % line, what="the error's script:line in the log")
        self.assertTrue(self.edge.alive())
        self.assertStatus(self.get(self.edge, "/flv/s.flv?deny=403"), 403)

    def test_runaway_script_is_stopped(self):
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/s.flv?spin=1")
        self.assertStatus(r, 500)
        self.assertLess(time.monotonic() - t0, T(5))
        self.edge.wait_log("instruction", what="the budget's log line")
        self.assertTrue(self.edge.alive())
        v = self.viewer(self.edge, "/flv/s.flv")  # the state still works
        self.assertEqual(v.status, 200)
        v.read_tags(3)

    def test_bad_return_value_gives_500(self):
        self.assertStatus(self.get(self.edge, "/flv/s.flv?badstatus=1"), 500)
        self.edge.wait_log("status must be an integer")

    def test_log_fields_and_ctx(self):
        v = self.viewer(self.edge, "/flv/s.flv?tag=abc")
        self.assertEqual(v.status, 200)
        v.read_tags(3)
        v.close()
        self.get(self.edge, "/flv/s.flv?deny=403")
        log = os.path.join(self.edge.dir, "access.log")

        def records():
            try:
                with open(log) as fh:
                    return [json.loads(ln)["fields"] for ln in fh.read().splitlines()]
            except OSError:
                return []
        # The hook's fields are the JSON line's "fields" (access_log_format "json", the default).
        wait_until(lambda: any(f.get("tag") == "abc" for f in records()) and
                   any(f.get("st") == "403" for f in records()), T(15), "access log lines")
        viewer = [f for f in records() if f.get("tag") == "abc"][0]
        self.assertEqual((viewer["st"], viewer["cs"]), ("200", "MISS"))
        denied = [f for f in records() if f.get("st") == "403"][0]
        self.assertEqual(denied["tag"], "none")


class OriginPhaseTest(EdgeTestCase):
    def test_failover_to_second_origin(self):
        good = self.start_origin()
        good.route("/live/s.flv", Synth())
        edge = self.start_edge({"resources": [{
            "name": "live", "prefix": "/flv/", "type": "live", "origin": "http://127.0.0.1:9/",
            "origin_connect_timeout": 2, "policy": "failover.lua"}]},
            files={"failover.lua": FAILOVER},
            env={"FE_DEAD": dead_url(), "FE_GOOD": good.url()})
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_tags(5)
        self.assertEqual(good.connections("/live/s.flv"), 1)
        r = self.errors_seen(edge)
        self.assertStatus(r, 299)
        self.assertEqual(r.body.decode(), "nil,unreachable")

    def test_all_origins_fail(self):
        edge = self.start_edge({"resources": [{
            "name": "live", "prefix": "/flv/", "type": "live", "origin": "http://127.0.0.1:9/",
            "policy": "failover.lua"}]},
            files={"failover.lua": FAILOVER.replace('os.getenv("FE_GOOD") .. "/live/"',
                                                    'os.getenv("FE_DEAD")')},
            env={"FE_DEAD": dead_url()})
        r = self.get(edge, "/flv/s.flv")
        self.assertStatus(r, 502)
        r = self.errors_seen(edge)
        self.assertEqual(r.body.decode(), "nil,unreachable,unreachable")

    def test_policy_url_that_is_no_url_is_500(self):
        good = self.start_origin()
        good.route("/live/s.flv", Synth())
        edge = self.start_edge({"resources": [{
            "name": "live", "prefix": "/flv/", "type": "live", "origin": good.url("/live/"),
            "policy": "inject.lua"}]}, files={"inject.lua": INJECT},
            env={"FE_DEAD": dead_url(), "FE_GOOD": good.url()})
        # A CR LF would add a header to the origin request; a space ends the target; raw bytes
        # from 0x80 and other control bytes are no URL either. First attempt or after a failover.
        cases = (("crlf", "1%20HTTP/1.1%0D%0AX-Injected:%20yes%0D%0AX-Pad:"),
                 ("space", "a%20b"), ("utf8", "%C3%A9"), ("nul", "a%00b"), ("del", "a%7Fb"),
                 ("failover", "1%0D%0AX-Injected:%20yes&dead_first=1"))
        for i, (name, x) in enumerate(cases):
            with self.subTest(case=name):
                r = self.get(edge, "/flv/%s.flv?x=%s" % (name, x))
                self.assertStatus(r, 500)
                self.assertEqual(r.body, b"500 policy error\n")
                self.assertEqual(len(edge.log_lines("not an origin URL")), i + 1,
                                 "one log line per bad URL; log tail:\n%s" % edge.stderr_tail(1500))
        self.assertEqual(good.requests_for("/live/s.flv"), [], "a bad URL reached the origin")
        # A base URL that fits, but not with the stream's name after it: never cut short (that
        # would be another URL), the policy's fault.
        r = self.get(edge, "/flv/long.flv?long=1")
        self.assertStatus(r, 500)
        edge.wait_log("origin hook", "is longer than 4095 bytes")
        self.assertEqual(len(good.requests), 0, "a URL cut short reached the origin")
        # A hook that raises on failover (no x: concatenating nil) is the policy's fault too.
        r = self.get(edge, "/flv/raise.flv?dead_first=1")
        self.assertStatus(r, 500)
        self.assertEqual(r.body, b"500 policy error\n")
        edge.wait_log("origin hook", "concatenate")
        v = self.viewer(edge, "/flv/s.flv?x=1")
        self.assertEqual(v.status, 200, v.response)
        v.read_tags(3)

    def errors_seen(self, edge):
        """The policy's `errors` global as the loop that ran the origin phase has it: each loop has
        its own Lua state, so ask until a request lands on that loop."""
        for _ in range(200):
            r = self.get(edge, "/flv/other.flv?errors=1")
            if r.body:
                return r
        self.fail("no loop has the origin phase's errors")


class QuickModeAndCheckTest(EdgeTestCase):
    def test_quick_mode_policy(self):
        origin = self.start_origin()
        origin.route("/s.flv", Synth())
        d = tempfile.mkdtemp(prefix="flvedge-policy-")
        p = os.path.join(d, "p.lua")
        with open(p, "w") as f:
            f.write('return { access = function(req) if req.args.key ~= "k" then return 403, "no key\\n" end end }\n')
        edge = self.start_quick_edge(origin.url(), extra_args=["--policy", p])
        r = self.get(edge, "/s.flv")
        self.assertStatus(r, 403)
        self.assertEqual(r.body, b"no key\n")
        v = self.viewer(edge, "/s.flv?key=k")
        self.assertEqual(v.status, 200)
        v.read_tags(3)

    def test_check_rejects_broken_policy(self):
        d = tempfile.mkdtemp(prefix="flvedge-policy-")
        with open(os.path.join(d, "bad.lua"), "w") as f:
            f.write("return { access = function(req) return end end\n")  # missing }
        with open(os.path.join(d, "good.lua"), "w") as f:
            f.write("return { access = function(req) end }\n")
        for name, code in (("bad", 1), ("good", 0)):
            cfg = os.path.join(d, name + ".conf.lua")
            with open(cfg, "w") as f:
                f.write('return { listen = {"127.0.0.1:0"}, resources = {{ prefix = "/flv/", '
                        'type = "live", origin = "http://127.0.0.1:9/", policy = "%s.lua" }} }\n' % name)
            r = run([BIN, "-t", "-c", cfg], timeout=T(20))
            self.assertEqual(r.returncode, code, r.stderr)
            if code:
                self.assertIn("bad.lua", r.stderr)

    def test_policy_not_a_table(self):
        d = tempfile.mkdtemp(prefix="flvedge-policy-")
        with open(os.path.join(d, "num.lua"), "w") as f:
            f.write("return 42\n")
        cfg = os.path.join(d, "c.lua")
        with open(cfg, "w") as f:
            f.write('return { listen = {"127.0.0.1:0"}, resources = {{ prefix = "/flv/", type = "live", '
                    'origin = "http://127.0.0.1:9/", policy = "num.lua" }} }\n')
        r = run([BIN, "-t", "-c", cfg], timeout=T(20))
        self.assertEqual(r.returncode, 1)
        self.assertIn("expected a policy table", r.stderr)


if __name__ == "__main__":
    unittest.main()
