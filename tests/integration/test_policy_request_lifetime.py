"""
A request object lives as long as its phase (docs/policies.md): a policy that keeps `req` (in a
global, an upvalue or req.ctx) and reads it during a later request gets a clear Lua error, hence a
500 with "request is finished" in the log, and never the C memory of a request that is gone (under
the sanitizer build a stale read is a heap-use-after-free report; in a plain build it returned
another client's header). Fields read while the request ran stay readable.
"""

import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import EdgeTestCase, Synth, free_port
from fe_mmdb import write_country_db

# ?keep=WHERE keeps this request; ?read=FIELD reads FIELD of the kept one in a later request;
# ?play=1 admits.
KEEPER = r'''
local kept_up
local holder = {}
local function kept()
  return KEPT_GLOBAL or kept_up or (holder.ctx and holder.ctx.self)
end
return {
  access = function(req)
    local a = req.args
    if a.keep == "global" then KEPT_GLOBAL = req
    elseif a.keep == "upvalue" then kept_up = req
    elseif a.keep == "ctx" then req.ctx.self = req; holder.ctx = req.ctx
    elseif a.keep == "read_first" then kept_up = req; local _ = req.headers.x_secret
    end
    if a.keep then return 200, "kept\n" end
    if a.play then return nil end
    if a.read == "header" then return 200, tostring(kept().headers.x_secret) .. "\n" end
    if a.read == "header_read_before" then return 200, tostring(kept().headers.x_secret) .. "\n" end
    if a.read == "country" then return 200, tostring(kept().country) .. "\n" end
    if a.read == "path" then return 200, tostring(kept().path) .. "\n" end
    if a.read == "origin" then return 200, tostring(ORIGIN_REQ.headers.user_agent) .. "\n" end
    if a.read == "origin_stream" then return 200, tostring(ORIGIN_REQ.stream) .. "\n" end
    return 403, "no\n"
  end,
  origin = function(req, attempt)
    ORIGIN_REQ = req
    return nil
  end,
}
'''

# The same with a log phase: boot.lua keeps the request from access to log for req.ctx.
KEEPER_WITH_LOG = KEEPER.replace("  origin = function", "  log = function(req) end,\n  origin = function")


class KeptRequestTest(EdgeTestCase):
    policy = KEEPER

    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth())
        geo = os.path.join(tempfile.mkdtemp(prefix="flvedge-geo-"), "geo.mmdb")
        write_country_db(geo, {"127.0.0.2/32": "DE"})
        # One loop: a kept req lives in a Lua global, and each loop has its own Lua state.
        self.edge = self.start_edge({
            "workers": 1,
            "geoip_db": geo,
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                           "origin": self.origin.url("/live/"), "policy": "keeper.lua"}],
        }, files={"keeper.lua": self.policy})

    def keep(self, where):
        r = self.get(self.edge, "/flv/s.flv?keep=" + where, headers={"X-Secret": "first client"},
                     source="127.0.0.2")
        self.assertStatus(r, 200)

    def read_fails(self, field):
        # Another client, with a header of its own, so a stale read could find it.
        r = self.get(self.edge, "/flv/s.flv?read=" + field, headers={"X-Secret": "second client"})
        self.assertStatus(r, 500)
        self.edge.wait_log("request is finished", what="the finished request's error in the log")
        self.assertTrue(self.edge.alive())
        self.assertStatus(self.get(self.edge, "/flv/s.flv?other=1"), 403)

    def test_header_of_request_kept_in_a_global(self):
        self.keep("global")
        self.read_fails("header")

    def test_header_of_request_kept_in_an_upvalue(self):
        self.keep("upvalue")
        self.read_fails("header")

    def test_header_of_request_kept_in_its_ctx(self):
        self.keep("ctx")
        self.read_fails("header")

    def test_country_of_kept_request(self):
        self.keep("global")
        self.read_fails("country")

    def test_fields_read_during_the_request_stay(self):
        self.keep("read_first")
        r = self.get(self.edge, "/flv/s.flv?read=header_read_before")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"first client\n")

    def test_lazy_field_of_kept_request(self):
        self.keep("upvalue")
        self.read_fails("path")

    def test_request_of_origin_phase(self):
        v = self.viewer(self.edge, "/flv/s.flv?play=1", headers={"User-Agent": "viewer/1"})
        self.assertEqual(v.status, 200)
        v.read_tags(3)
        v.close()
        self.read_fails("origin")


class KeptRequestWithLogTest(KeptRequestTest):
    policy = KEEPER_WITH_LOG


if __name__ == "__main__":
    unittest.main()
