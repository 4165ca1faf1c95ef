-- policies/cache_rules.lua: settings first, behaviour second; every decision through
-- flvedge.testing.cache, which checks it as the server does.
local testing = require "flvedge.testing"

local function load(settings) return testing.load("cache_rules", settings) end
local function lookup(p, url) return testing.cache(p, { url = url }) end
local function answer(p, url, res) return testing.cache(p, { url = url }, res or {}) end

local EXAMPLE = {
  rules = {
    { match = "%.flv$", ttl = 86400 },
    { prefix = "/videos/live-archive/", ttl = 60 },
    { match = "%.m3u8$", bypass = true },
  },
  default_ttl = 3600,
  cache_errors = { [404] = 30 },
}

describe("cache_rules", function()
  describe("settings", function()
    local function refused(settings, msg)
      assert.error_matches(function() load(settings) end, msg, nil, true)
    end

    it("all are optional", function()
      local p = load({})
      assert.is_nil(lookup(p, "/a.flv?token=x"))
      assert.same({ cacheable = true }, answer(p, "/a.flv"))
    end)

    it("refuses unknown settings and unknown rule fields", function()
      refused({ ttl = 5 }, 'cache_rules: unknown setting "ttl" (known: rules, default_ttl, keep_query, strip_args, cache_errors, ignore_origin_no_store)')
      refused({ rules = { { match = "%.flv$", tll = 5 } } }, 'cache_rules: rules[1]: unknown setting "tll" (known: match, prefix, ttl, bypass)')
      refused("x", "cache_rules: settings must be a table")
    end)

    it("checks each rule, naming it", function()
      refused({ rules = { { ttl = 5 } } }, "cache_rules: rules[1] needs one of match (a Lua pattern) or prefix")
      refused({ rules = { { match = "a", prefix = "/", ttl = 5 } } }, "cache_rules: rules[1] needs one of match")
      refused({ rules = { { match = "%.flv$" }, { match = "[a" } } }, "cache_rules: rules[2].match = [a: bad Lua pattern: missing ']'")
      refused({ rules = { { match = "a|b" } } }, "'|' is not alternation")
      refused({ rules = { { match = "" } } }, "bad Lua pattern: empty")
      refused({ rules = { { prefix = "videos/" } } }, "cache_rules: rules[1].prefix must be a path starting with /, got videos/")
      refused({ rules = { { prefix = "/", ttl = -1 } } }, "cache_rules: rules[1].ttl must be a number of seconds >= 0, got -1")
      refused({ rules = { { prefix = "/", ttl = 0 / 0 } } }, "cache_rules: rules[1].ttl must be a number of seconds >= 0")
      refused({ rules = { { prefix = "/", bypass = "yes" } } }, "cache_rules: rules[1].bypass must be true or false, got string")
      refused({ rules = { "%.flv$" } }, "cache_rules: rules[1] must be a table, got string")
      refused({ rules = { x = {} } }, "cache_rules: rules must be a list, it has the key x")
    end)

    it("checks the other settings", function()
      refused({ default_ttl = "1h" }, "cache_rules: default_ttl must be a number of seconds >= 0, got 1h")
      refused({ keep_query = 1 }, "cache_rules: keep_query must be true or false, got number")
      refused({ ignore_origin_no_store = "no" }, "cache_rules: ignore_origin_no_store must be true or false")
      refused({ strip_args = "token" }, "cache_rules: strip_args must be a list, got string")
      refused({ strip_args = { "token", "" } }, "cache_rules: strip_args[2] must be an argument name")
      refused({ cache_errors = { [200] = 5 } }, "cache_rules: cache_errors: a status must be an integer from 400 to 599, got 200")
      refused({ cache_errors = { ["404"] = 5 } }, "cache_rules: cache_errors: a status must be an integer from 400 to 599, got 404")
      refused({ cache_errors = { [404] = -5 } }, "cache_rules: cache_errors[404] must be a number of seconds >= 0, got -5")
    end)
  end)

  describe("lookup call", function()
    it("leaves the key to the server without keep_query", function()
      assert.is_nil(lookup(load(EXAMPLE), "/videos/a.flv?token=x&b=1"))
    end)

    it("bypasses by the first matching rule", function()
      local p = load(EXAMPLE)
      assert.same({ bypass = true }, lookup(p, "/hls/index.m3u8"))
      local first = load({ rules = { { prefix = "/hls/", ttl = 5 }, { match = "%.m3u8$", bypass = true } } })
      assert.is_nil(lookup(first, "/hls/index.m3u8"))
    end)

    it("with keep_query: the path and the query without the auth arguments, sorted", function()
      local p = load({ keep_query = true })
      assert.same({ key = "/v/a.flv?a=1&b=2", keep_query = true }, lookup(p, "/v/a.flv?b=2&token=t&a=1&expires=9&md5=m"))
      assert.same(lookup(p, "/v/a.flv?a=1&b=2"), lookup(p, "/v/a.flv?b=2&a=1&sign=s&auth_key=k"))
      assert.same({ key = "/v/a.flv", keep_query = true }, lookup(p, "/v/a.flv?token=t&expires=1"))
      assert.same({ key = "/v/a.flv", keep_query = true }, lookup(p, "/v/a.flv"))
      -- an encoded name is still the argument; empty pieces go
      assert.same({ key = "/v/a.flv?q=1", keep_query = true }, lookup(p, "/v/a.flv?%74oken=t&&q=1"))
    end)

    it("strip_args replaces the default list", function()
      local p = load({ keep_query = true, strip_args = { "sid" } })
      assert.same({ key = "/v/a.flv?token=t", keep_query = true }, lookup(p, "/v/a.flv?sid=1&token=t"))
    end)

    it("keeps the key what the server takes: visible ASCII, at most 511 bytes", function()
      local p = load({ keep_query = true })
      assert.same({ key = "/v/%C3%A9.flv?a=%20", keep_query = true }, lookup(p, "/v/\195\169.flv?a=\32"))
      local d = lookup(p, "/v/a.flv?x=" .. ("y"):rep(600))
      assert.matches("^md5:%x+$", d.key)
      assert.equal(36, #d.key)
      assert.are_not.same(d, lookup(p, "/v/a.flv?x=" .. ("z"):rep(600)))
    end)

    it("a bypassed request keeps its query with keep_query", function()
      local p = load({ keep_query = true, rules = { { match = "%.m3u8$", bypass = true } } })
      assert.same({ bypass = true, keep_query = true }, lookup(p, "/a.m3u8?token=t"))
    end)
  end)

  describe("answer call", function()
    it("ttl from the first matching rule, else default_ttl", function()
      local p = load(EXAMPLE)
      assert.same({ cacheable = true, ttl = 86400 }, answer(p, "/videos/a.flv", { status = 200 }))
      assert.same({ cacheable = true, ttl = 86400 }, answer(p, "/videos/a.flv", { status = 206 }))
      assert.same({ cacheable = true, ttl = 60 }, answer(p, "/videos/live-archive/x.mp4"))
      assert.same({ cacheable = true, ttl = 86400 }, answer(p, "/videos/live-archive/x.flv"))
      assert.same({ cacheable = true, ttl = 3600 }, answer(p, "/videos/poster.jpg"))
      assert.same({ bypass = true }, answer(p, "/hls/index.m3u8"))
    end)

    it("a rule without ttl takes default_ttl; without default_ttl the resource's cache_ttl stays", function()
      local p = load({ rules = { { prefix = "/a/" }, { prefix = "/b/", ttl = 5 } }, default_ttl = 10 })
      assert.same({ cacheable = true, ttl = 10 }, answer(p, "/a/x.flv"))
      assert.same({ cacheable = true, ttl = 5 }, answer(p, "/b/x.flv"))
      assert.same({ cacheable = true, ttl = 10 }, answer(p, "/c/x.flv"))
      assert.same({ cacheable = true }, answer(load({ rules = { { prefix = "/a/" } } }), "/a/x.flv"))
      assert.same({ cacheable = true, ttl = 0 }, answer(load({ default_ttl = 0 }), "/b/x.flv"))
    end)

    it("4xx and 5xx only when listed in cache_errors, with their ttl", function()
      local p = load(EXAMPLE)
      assert.same({ cacheable = true, ttl = 30 }, answer(p, "/videos/a.flv", { status = 404 }))
      assert.same({ cacheable = false }, answer(p, "/videos/a.flv", { status = 403 }))
      assert.same({ cacheable = false }, answer(p, "/videos/a.flv", { status = 503 }))
      assert.same({ cacheable = false }, answer(p, "/videos/a.flv", { status = 304 }))
    end)

    it("honours the origin's no-store and private", function()
      local p = load(EXAMPLE)
      assert.same({ cacheable = false }, answer(p, "/a.flv", { cache_control = "no-store" }))
      assert.same({ cacheable = false }, answer(p, "/a.flv", { cache_control = "max-age=60, Private" }))
      assert.same({ cacheable = false }, answer(p, "/a.flv", { cache_control = 'private="set-cookie"' }))
      assert.same({ cacheable = false }, answer(p, "/a.flv", { status = 404, cache_control = "no-store" }))
      assert.same({ cacheable = true, ttl = 86400 }, answer(p, "/a.flv", { cache_control = "public, max-age=60" }))
      assert.same({ cacheable = true, ttl = 86400 }, answer(p, "/a.flv", { cache_control = "no-storefront" }))
    end)

    it("ignore_origin_no_store caches anyway", function()
      local s = { ignore_origin_no_store = true }
      for k, v in pairs(EXAMPLE) do s[k] = v end
      assert.same({ cacheable = true, ttl = 86400 }, answer(load(s), "/a.flv", { cache_control = "no-store, private" }))
    end)
  end)
end)
