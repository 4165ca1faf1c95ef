"""
The policy sandbox against the real binary (docs/policies.md, "The sandbox"). Each test is one
way a policy used to get out of the instruction budget and freeze the event loop until SIGKILL:
catching the budget error with pcall, code made with loadstring/load, a __gc finalizer, clearing
the hook with debug.sethook, a pattern that takes forever inside C; and a policy that eats memory.
Each must now be stopped with a 500 within a couple of seconds, with a log line, and the server
keeps serving the next request. Every edge is fresh: an escape that froze one would fail only its
own test.
"""

import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import os
import tempfile

from fe_harness import BIN, SANITIZED, T, EdgeTestCase, free_port, run

# Each ?NAME=1 runs one escape; anything else is denied with 403 (the server still answers).
ESCAPES = r'''
local escapes = {}

-- (a) catching the budget error and going on
escapes.pcall = function()
  while true do pcall(function() while true do end end) end
end
escapes.xpcall = function()
  while true do xpcall(function() while true do end end, function(e) return e end) end
end
escapes.coroutine = function()
  while true do
    coroutine.resume(coroutine.create(function() while true do end end))
  end
end
escapes.error_object = function()
  -- the budget error as a table the policy tries to swallow
  while true do
    local ok, e = pcall(function() while true do end end)
    if not ok then e = nil end
  end
end

-- (b) code compiled at run time (the JIT would compile its loop, where no hook runs)
escapes.loadstring = function() loadstring("while true do end")() end
escapes.load = function()
  local done = false
  load(function() if done then return nil end done = true return "while true do end" end)()
end
escapes.dofile = function() dofile("/dev/null") while true do end end
escapes.require_ffi = function()
  local ffi = require "ffi"
  ffi.cdef "unsigned int sleep(unsigned int s);"
  ffi.C.sleep(1000)
end

-- (c) a finalizer runs with hooks off
escapes.gc = function()
  local p = newproxy(true)
  getmetatable(p).__gc = function() while true do end end
  p = nil
  collectgarbage()
end

-- (d) clearing the hook
escapes.sethook = function()
  debug.sethook()
  while true do end
end
escapes.jit = function()
  jit.on()
  local n = 0
  while true do n = n + 1 end
end

-- (e) backtracking inside C, where no hook runs
local SUBJECT = ("a"):rep(4096)
escapes.find = function() return 200, tostring(string.find(SUBJECT, ".-.-.-.-b")) end
escapes.method_find = function() return 200, tostring(SUBJECT:find(".-.-.-.-b")) end
escapes.match = function() return 200, tostring(SUBJECT:match(".-.-.-.-b")) end
escapes.gsub = function() return 200, tostring(SUBJECT:gsub(".-.-.-.-b", "x")) end
escapes.gmatch = function() for m in SUBJECT:gmatch(".-.-.-.-b") do end return 200, "done" end
escapes.many_finds = function()
  -- many short ones: each is cheap, together they are not
  local s = ("a"):rep(200)
  while true do s:find(".-.-b") end
end

-- C work that takes time without a step to pay for: copying and comparing long strings
escapes.concat_loop = function()
  local s = "x"
  for _ = 1, 22 do s = s .. s end -- 4 MiB
  while true do local t = s .. "y" end
end
escapes.make_long = function()
  LONG_A = "x"
  for _ = 1, 22 do LONG_A = LONG_A .. LONG_A end
  return 200, "made\n"
end
escapes.make_long_too = function()
  LONG_B = LONG_A .. "y"
  return 200, "made\n"
end
escapes.compare_loop = function()
  local a, b, n = LONG_A, LONG_B, 0
  while a < b do n = n + 1 end
end

-- the library's own loops, compiled where no hook runs, pay too
local util = require "flvedge.util"
local acl = require "flvedge.acl"
local SLOW_UA = acl.user_agent{ policy = "allow", values = { "~.-.-.-.-b" } }
escapes.library_loop = function()
  local s = ("a"):rep(2^15)
  while true do util.md5(s) end
end
escapes.library_pattern = function(req)
  return SLOW_UA:check(req)
end

-- memory
escapes.hog = function()
  local t = {}
  for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end
end
escapes.rep = function() return 200, tostring(#("x"):rep(2^40)) end
escapes.doubling = function()
  local s = "x"
  for _ = 1, 64 do s = s .. s end
  return 200, tostring(#s)
end

return {
  access = function(req)
    for name in pairs(req.args) do
      local f = escapes[name]
      if f then return f(req) end
    end
    return 403, "still here\n"
  end,
}
'''


class EscapeTest(EdgeTestCase):
    budget = 1000000

    def setUp(self):
        # One loop: some escapes keep a string in a Lua global between requests, and each loop
        # has its own Lua state.
        self.edge = self.start_edge({
            "workers": 1,
            "lua_budget": self.budget,
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                           "origin": "http://127.0.0.1:%d/live/" % free_port(),
                           "policy": "escapes.lua"}],
        }, files={"escapes.lua": ESCAPES})

    def stopped(self, name, log=None):
        """?name=1 gets a 500 within a couple of seconds; the server still answers."""
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/s.flv?%s=1" % name, timeout=T(5))
        took = time.monotonic() - t0
        self.assertStatus(r, 500)
        self.assertLess(took, T(3), "%s took %.1f s to stop" % (name, took))
        if log:
            self.edge.wait_log(log, what="%r in the log for %s" % (log, name))
        self.assertTrue(self.edge.alive())
        r = self.get(self.edge, "/flv/s.flv?next=1", timeout=T(5))
        self.assertStatus(r, 403)
        self.assertEqual(r.body, b"still here\n")

    # (a)
    def test_pcall_cannot_catch_the_budget(self):
        self.stopped("pcall", "instruction budget exceeded")

    def test_xpcall_cannot_catch_the_budget(self):
        self.stopped("xpcall", "instruction budget exceeded")

    def test_coroutine_cannot_catch_the_budget(self):
        self.stopped("coroutine", "instruction budget exceeded")

    def test_swallowed_budget_error_is_raised_again(self):
        self.stopped("error_object", "instruction budget exceeded")

    # (b)
    def test_no_loadstring(self):
        self.stopped("loadstring", "loadstring")

    def test_no_load(self):
        self.stopped("load", "'load'")

    def test_no_dofile(self):
        self.stopped("dofile", "dofile")

    def test_no_ffi(self):
        self.stopped("require_ffi", "ffi")

    # (c)
    def test_no_finalizers(self):
        self.stopped("gc", "newproxy")

    # (d)
    def test_no_debug(self):
        self.stopped("sethook", "debug")

    def test_no_jit_control(self):
        self.stopped("jit", "jit")

    # (e)
    def test_slow_pattern_find(self):
        self.stopped("find", "budget exceeded")

    def test_slow_pattern_as_method(self):
        self.stopped("method_find", "budget exceeded")

    def test_slow_pattern_match(self):
        self.stopped("match", "budget exceeded")

    def test_slow_pattern_gsub(self):
        self.stopped("gsub", "budget exceeded")

    def test_slow_pattern_gmatch(self):
        self.stopped("gmatch", "budget exceeded")

    def test_many_short_patterns(self):
        self.stopped("many_finds", "budget exceeded")

    # the flvedge.* library
    def test_library_loop(self):
        self.stopped("library_loop", "budget exceeded in the flvedge library")

    def test_library_pattern_on_a_header(self):
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/s.flv?library_pattern=1", headers={"User-Agent": "a" * 4000},
                     timeout=T(5))
        self.assertStatus(r, 500)
        self.assertLess(time.monotonic() - t0, T(3))
        self.edge.wait_log("acl.lua:.*budget exceeded in a pattern match")

    # C work paid by allocating, or stopped by the time limit
    def test_concatenation_loop(self):
        self.stopped("concat_loop", "budget exceeded")

    def test_comparison_loop(self):
        for name in ("make_long", "make_long_too"):
            self.assertStatus(self.get(self.edge, "/flv/s.flv?%s=1" % name), 200)
        self.stopped("compare_loop", "ran out of time")

    # memory
    def test_huge_rep(self):
        self.stopped("rep", "memory")

    def test_doubling_string(self):
        self.stopped("doubling", "budget exceeded while allocating")


class MemoryHogTest(EdgeTestCase):
    """A policy that fills memory gets a 500 at lua_memory_limit, and the process stays small."""

    LIMIT_MB = 64                               # the default lua_memory_limit
    BOUND_MB = 1500 if SANITIZED else 400       # RSS growth allowed (ASan keeps freed memory)

    def hog(self, name):
        edge = self.start_edge({
            "lua_budget": 1000000000,  # memory, not the budget, must stop it
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                           "origin": "http://127.0.0.1:%d/live/" % free_port(),
                           "policy": "escapes.lua"}],
        }, files={"escapes.lua": ESCAPES})
        base = edge.rss_kb()
        peak = [base]
        done = threading.Event()

        def watch():
            # A guard for the old behaviour: a hog that is not stopped would take the machine.
            while not done.is_set() and edge.alive():
                rss = edge.rss_kb()
                peak[0] = max(peak[0], rss)
                if rss - base > 4 * self.BOUND_MB * 1024:
                    edge.kill()
                    return
                time.sleep(0.01)
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        try:
            t0 = time.monotonic()
            r = self.get(edge, "/flv/s.flv?%s=1" % name, timeout=T(10))
            took = time.monotonic() - t0
        finally:
            done.set()
            w.join()
        self.assertStatus(r, 500)
        self.assertLess(took, T(5))
        edge.wait_log("memory limit exceeded", what="the memory limit's log line")
        grew = (peak[0] - base) / 1024
        self.assertLess(grew, self.BOUND_MB, "RSS grew by %.0f MB" % grew)
        # The state is usable again: the hog's garbage was collected.
        for _ in range(3):
            self.assertStatus(self.get(edge, "/flv/s.flv?next=1"), 403)

    def test_table_of_strings(self):
        self.hog("hog")

    def test_doubling_string(self):
        self.hog("doubling")


class LoadTest(EdgeTestCase):
    """The limits hold while a generation loads too, and lua_memory_limit is checked."""

    def check(self, policy, top=""):
        d = tempfile.mkdtemp(prefix="flvedge-sandbox-")
        with open(os.path.join(d, "p.lua"), "w") as f:
            f.write(policy)
        cfg = os.path.join(d, "c.lua")
        with open(cfg, "w") as f:
            f.write('return { listen = {"127.0.0.1:0"}, %s resources = {{ prefix = "/flv/", type = "live", '
                    'origin = "http://127.0.0.1:9/", policy = "p.lua" }} }\n' % top)
        t0 = time.monotonic()
        r = run([BIN, "-t", "-c", cfg], timeout=T(30))
        return r, time.monotonic() - t0

    def test_policy_file_that_loops_is_refused(self):
        r, took = self.check("while true do end\nreturn {}\n")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("instruction budget exceeded", r.stderr)
        self.assertLess(took, T(15))

    def test_policy_file_over_the_memory_limit_is_refused(self):
        r, _ = self.check("local t = {}\nfor i = 1, 1e6 do t[i] = {} end\nreturn {}\n",
                          top="lua_memory_limit = 1048576,")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("memory limit exceeded", r.stderr)

    def test_memory_limit_range(self):
        for value in (1024, 32 * 1024 ** 3):
            r, _ = self.check("return {}\n", top="lua_memory_limit = %d," % value)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("lua_memory_limit", r.stderr)
        r, _ = self.check("return {}\n", top="lua_memory_limit = 2097152,")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
