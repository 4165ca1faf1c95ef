local origin = require "flvedge.origin"
local testing = require "flvedge.testing"

local function req(stream) return testing.request{ prefix = "/flv/", url = "/flv/" .. stream .. ".flv" } end

describe("flvedge.origin", function()
  describe("ordered", function()
    it("returns the origins in order, then nil", function()
      local pick = origin.ordered{ "http://a/live/{stream}.flv", "http://b/x.flv" }
      local r = req("cam1")
      assert.equal("http://a/live/cam1.flv", pick(r, 1))
      assert.equal("http://b/x.flv", pick(r, 2, "timeout"))
      assert.is_nil(pick(r, 3, "timeout"))
    end)

    it("gives nil for a {stream} URL when the request has no stream", function()
      local pick = origin.ordered{ "http://a/{stream}.flv" }
      assert.is_nil(pick(testing.request{ url = "/index.html" }, 1))
    end)

    it("raises on bad entries", function()
      assert.has_error(function() origin.ordered{} end, "origin.ordered: needs at least one origin")
      assert.has_error(function() origin.ordered{ "http://a", 5 } end,
        "origin.ordered[2]: expected a URL string, got number")
      assert.has_error(function() origin.ordered{ "http://a/{stream}/{stream}" } end,
        'origin.ordered[1]: "http://a/{stream}/{stream}" has {stream} more than once')
      assert.has_error(function() origin.ordered("http://a") end, "origin.ordered: expected a table of origins, got string")
    end)
  end)

  describe("weighted", function()
    it("spreads first attempts by weight, smoothly", function()
      local pick = origin.weighted{ { url = "a", weight = 5 }, { url = "b", weight = 1 }, { url = "c", weight = 1 } }
      local count, seq = { a = 0, b = 0, c = 0 }, {}
      for i = 1, 70 do
        local u = pick(req("s" .. i), 1)
        count[u] = count[u] + 1
        if i <= 7 then seq[i] = u end
      end
      assert.same({ a = 50, b = 10, c = 10 }, count)
      -- nginx's smooth weighted round-robin sequence for 5/1/1
      assert.same({ "a", "a", "b", "a", "c", "a", "a" }, seq)
    end)

    it("after a failure moves on to the next different origin, then gives up", function()
      local pick = origin.weighted{ { url = "a", weight = 1 }, { url = "a", weight = 1 }, { url = "b", weight = 1 },
        { url = "c", weight = 0 } }
      local r = req("x")
      local first = pick(r, 1)
      local tried = { [first] = true }
      for attempt = 2, 3 do
        local u = pick(r, attempt, "unreachable")
        assert.is_string(u)
        assert.is_nil(tried[u], "repeated " .. u)
        tried[u] = true
      end
      assert.is_nil(pick(r, 4, "unreachable"))
      assert.same({ a = true, b = true, c = true }, tried)
    end)

    it("remembers each stream's first pick separately", function()
      local pick = origin.weighted{ "a", "b", "c" }
      local r1, r2 = req("one"), req("two")
      assert.equal("a", pick(r1, 1))
      assert.equal("b", pick(r2, 1))
      assert.equal("b", pick(r1, 2, "timeout"))
      assert.equal("c", pick(r2, 2, "timeout"))
      assert.equal("a", pick(r2, 3, "timeout"))
    end)

    it("weight 0 is used only after a failure", function()
      local pick = origin.weighted{ { url = "main", weight = 1 }, { url = "backup", weight = 0 } }
      for i = 1, 20 do assert.equal("main", pick(req("s" .. i), 1)) end
      assert.equal("backup", pick(req("s20"), 2, "status 503"))
    end)

    it("stays bounded with many streams", function()
      local pick = origin.weighted{ "a", "b" }
      for i = 1, 5000 do pick(req("s" .. i), 1) end
      assert.is_string(pick(req("s5000"), 2, "timeout"))
      collectgarbage()
      local before = collectgarbage("count")
      for i = 5001, 20000 do pick(req("s" .. i), 1) end
      collectgarbage()
      assert.is_true(collectgarbage("count") - before < 2048)
    end)

    it("raises on bad weights", function()
      assert.has_error(function() origin.weighted{ { url = "a", weight = -1 } } end,
        "origin.weighted[1]: weight must be a number >= 0, got -1")
      assert.has_error(function() origin.weighted{ { url = "a", weight = "2" } } end,
        "origin.weighted[1]: weight must be a number >= 0, got 2")
      assert.has_error(function() origin.weighted{ { url = "a", weight = 0 } } end,
        "origin.weighted: at least one origin needs a weight above 0")
      assert.has_error(function() origin.weighted{ { weight = 1 } } end, "origin.weighted[1]: expected a URL string, got nil")
    end)
  end)

  describe("hash", function()
    local function origins(n)
      local t = {}
      for i = 1, n do t[i] = "http://o" .. i .. "/live/{stream}.flv" end
      return t
    end

    it("hash32 is stable and spreads", function()
      assert.equal(origin.hash32("abc"), origin.hash32("abc"))
      assert.are_not.equal(origin.hash32("abc"), origin.hash32("abd"))
      local h = origin.hash32("")
      assert.is_true(h >= 0 and h < 2 ^ 32 and h % 1 == 0)
      local high = 0
      for i = 1, 1000 do if origin.hash32("k" .. i) >= 2 ^ 31 then high = high + 1 end end
      assert.is_true(high > 400 and high < 600)
    end)

    it("gives a stream the same origin every time, spread evenly", function()
      local pick = origin.hash{ urls = origins(4) }
      local again = origin.hash{ urls = origins(4) }
      local count = {}
      for i = 1, 4000 do
        local r = req("stream" .. i)
        local u = pick(r, 1)
        assert.equal(u, pick(r, 1))
        assert.equal(u, again(r, 1))
        local host = u:match("^http://(o%d)/live/stream" .. i .. "%.flv$")
        count[host] = (count[host] or 0) + 1
      end
      for _, c in ipairs({ count.o1 or 0, count.o2 or 0, count.o3 or 0, count.o4 or 0 }) do assert.is_true(c > 700 and c < 1300, "uneven: " .. c) end
    end)

    it("adding one origin moves only about 1/N of the streams, all to the new one", function()
      local five, six = origin.hash{ urls = origins(5) }, origin.hash{ urls = origins(6) }
      local moved, total = 0, 3000
      for i = 1, total do
        local r = req("cam-" .. i)
        local a, b = five(r, 1), six(r, 1)
        if a ~= b then
          moved = moved + 1
          assert.equal("http://o6/live/cam-" .. i .. ".flv", b)
        end
      end
      -- expected 1/6 of the streams
      assert.is_true(moved > total * 0.10 and moved < total * 0.24, "moved " .. moved)
    end)

    it("fails over to the next distinct origins on the ring, then gives up", function()
      local pick = origin.hash{ "a", "b", "c", replicas = 50 }
      local r = req("x")
      local seen = {}
      for attempt = 1, 3 do
        local u = pick(r, attempt, attempt > 1 and "timeout" or nil)
        assert.is_nil(seen[u])
        seen[u] = true
      end
      assert.is_nil(pick(r, 4, "timeout"))
      assert.equal(pick(r, 2), pick(r, 2))
    end)

    it("the failover origin is stable when the first one is removed", function()
      local three = origin.hash{ "a", "b", "c" }
      local two = {}
      for i = 1, 200 do
        local r = req("s" .. i)
        local first, second = three(r, 1), three(r, 2)
        local rest = {}
        for _, u in ipairs({ "a", "b", "c" }) do if u ~= first then rest[#rest + 1] = u end end
        two[first] = two[first] or origin.hash(rest)
        assert.equal(second, two[first](r, 1))
      end
    end)

    it("raises on bad settings", function()
      assert.has_error(function() origin.hash{ "a", "a" } end, 'origin.hash[2]: "a" is listed twice')
      assert.has_error(function() origin.hash{ "a", replicas = 0 } end,
        "origin.hash: replicas must be an integer from 1 to 10000, got 0")
      assert.has_error(function() origin.hash{ urls = {} } end, "origin.hash: needs at least one origin")
    end)
  end)

  describe("failover_on", function()
    it("matches kinds, classes and codes", function()
      local set = origin.errors{ "unreachable", "timeout", "5xx", "404", "status 429", "http_403" }
      assert.is_true(origin.failover_on("unreachable", set))
      assert.is_true(origin.failover_on("timeout", set))
      assert.is_true(origin.failover_on("status 503", set))
      assert.is_true(origin.failover_on("status 500", set))
      assert.is_true(origin.failover_on("status 404", set))
      assert.is_true(origin.failover_on("status 429", set))
      assert.is_true(origin.failover_on("status 403", set))
      assert.is_false(origin.failover_on("status 400", set))
      assert.is_false(origin.failover_on("status 302", set))
      assert.is_false(origin.failover_on("malformed", set))
      assert.is_false(origin.failover_on(nil, set))
      assert.is_false(origin.failover_on("status 5", set))
    end)

    it("takes a plain list too", function()
      assert.is_true(origin.failover_on("status 502", { "5xx" }))
      assert.is_false(origin.failover_on("timeout", { "5xx" }))
      assert.is_true(origin.failover_on("unreachable", { "error" }))
    end)

    it("knows the mid-stream failures of a live pull", function()
      local set = origin.errors{ "stall", "broken", "down" }
      assert.is_true(origin.failover_on("stall", set))
      assert.is_true(origin.failover_on("broken", set))
      assert.is_true(origin.failover_on("down", set))
      assert.is_false(origin.failover_on("ended", set))
      assert.is_true(origin.failover_on("ended", { "ended" }))
    end)

    it("raises on unknown names", function()
      local known = ' is not "unreachable", "timeout", "stall", "broken", "ended", "down", "4xx", "5xx" or a status code'
      assert.error_matches(function() origin.errors{ "5xx", "refused" } end, 'origin.errors[2]: "refused"' .. known, nil, true)
      assert.error_matches(function() origin.errors{ "600" } end, 'origin.errors[1]: "600"' .. known, nil, true)
    end)
  end)

  it("stream_template turns a base URL into a pull URL", function()
    assert.equal("http://a/live/{stream}.flv", origin.stream_template("http://a/live/"))
    assert.equal("http://a/live/{stream}.flv", origin.stream_template("http://a/live"))
    assert.equal("file:media/demo.flv", origin.stream_template("file:media/demo.flv"))
    assert.equal("http://a/{stream}/index.flv", origin.stream_template("http://a/{stream}/index.flv"))
  end)
end)
