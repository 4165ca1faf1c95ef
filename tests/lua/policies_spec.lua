-- The ready-made policies of policies/: settings first, behaviour second.
local testing = require "flvedge.testing"
local token = require "flvedge.token"

local EXP = 2147483647

local function signed(path, extra)
  local t = { url = token.md5_url(path, EXP, "s3cret"), time = 1700000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("policies", function()
  it("each module is a factory", function()
    for _, name in ipairs({ "secure_token", "access_control", "origin_failover", "chain", "cache_rules" }) do
      assert.is_function(require(name), name)
    end
  end)

  describe("secure_token", function()
    it("settings are checked up front", function()
      assert.has_error(function() testing.load("secure_token", {}) end,
        "secure_token: token: secret must be a non-empty string, got nil")
      assert.has_error(function() testing.load("secure_token", { secret = "s", type = "sha1" }) end,
        'secure_token: token: type must be "md5", "nginx" or "hmac", got sha1')
      assert.has_error(function() testing.load("secure_token", { secret = "s", expires = "x" }) end,
        'secure_token: token: unknown option "expires"')
      assert.has_error(function() require("secure_token")("s3cret") end, "secure_token: settings must be a table")
    end)

    it("admits a valid token, 403 and 410 with short plain-text bodies", function()
      local p = testing.load("secure_token", { secret = "s3cret" })
      assert.is_nil(testing.run(p, signed("/flv/a.flv")))
      assert.same({ 403, "403 Forbidden: missing token\n" }, { testing.run(p, { url = "/flv/a.flv" }) })
      assert.same({ 403, "403 Forbidden: invalid token\n" },
        { testing.run(p, { url = "/flv/a.flv?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=2147483647" }) })
      local old = { url = token.md5_url("/flv/a.flv", 1000, "s3cret"), time = 1000 }
      assert.same({ 410, "410 Gone: token expired\n" }, { testing.run(p, old) })
    end)

    it("other formats through type", function()
      local p = testing.load("secure_token", { type = "hmac", secret = "k", ip = true })
      local tok = token.hmac_sign("/flv/a.flv", EXP, "k", "10.0.0.1")
      assert.is_nil(testing.run(p, { url = "/flv/a.flv?token=" .. tok .. "&expires=2147483647", client_ip = "10.0.0.1" }))
      assert.equal(403, testing.run(p, { url = "/flv/a.flv?token=" .. tok .. "&expires=2147483647", client_ip = "10.0.0.2" }))
    end)
  end)

  describe("access_control", function()
    local settings = {
      ip = { policy = "allow", values = { "192.0.2.0/24" } },
      referer = { policy = "deny", values = { "example.com", "*.example.com" }, empty = "allow" },
      user_agent = { policy = "allow", values = { "~*bot" } },
      country = { policy = "deny", values = { "DE", "AT" } },
    }

    it("settings are checked up front, naming the bad value", function()
      assert.has_error(function() testing.load("access_control", {}) end,
        "access_control: settings need at least one of ip, referer, user_agent, country")
      assert.has_error(function() testing.load("access_control", { ip = { policy = "deny", values = { "10.0.0.0/99" } } }) end,
        'access_control: acl.ip: values[1]: bad prefix length in CIDR "10.0.0.0/99" (0 to 32)')
      assert.has_error(function() testing.load("access_control", { referrer = { policy = "deny", values = {} } }) end,
        'access_control: unknown list "referrer" (known: ip, referer, user_agent, country)')
      assert.has_error(function() testing.load("access_control", { country = { policy = "whitelist", values = {} } }) end,
        'access_control: acl.country: policy must be "allow" (block the listed values) or "deny" (admit only the '
        .. 'listed values), got "whitelist"')
      assert.has_error(function() testing.load("access_control", { user_agent = { policy = "deny", values = { "~(x" } } }) end,
        'access_control: acl.user_agent: values[1] = "~(x": bad Lua pattern: unfinished capture')
      assert.has_error(function() testing.load("access_control", { referer = { policy = "deny", values = "x.com" } }) end,
        "access_control: acl.referer: values must be a list, got string")
    end)

    it("admits a request every list admits", function()
      local p = testing.load("access_control", settings)
      assert.is_nil(testing.run(p, { client_ip = "198.51.100.1", country = "DE",
        headers = { Referer = "https://www.example.com/player", User_Agent = "Mozilla/5.0" } }))
      assert.is_nil(testing.run(p, { client_ip = "198.51.100.1", country = "AT" }))
    end)

    it("the first list that refuses answers, 403", function()
      local p = testing.load("access_control", settings)
      local function deny(t) return select(2, testing.run(p, t)) end
      assert.equal("403 Forbidden: address not allowed\n",
        deny{ client_ip = "192.0.2.9", country = "FR", headers = { Referer = "https://evil.com/" } })
      assert.equal("403 Forbidden: referer not allowed\n",
        deny{ client_ip = "198.51.100.1", country = "FR", headers = { Referer = "https://evil.com/" } })
      assert.equal("403 Forbidden: user agent not allowed\n",
        deny{ client_ip = "198.51.100.1", country = "DE", headers = { User_Agent = "GoogleBot" } })
      assert.equal("403 Forbidden: country not allowed\n", deny{ client_ip = "198.51.100.1", country = "FR" })
      assert.equal("403 Forbidden: country not allowed\n", deny{ client_ip = "198.51.100.1" })
    end)

    it("does not read the country when an earlier list refuses", function()
      local p = testing.load("access_control", settings)
      local reads = 0
      local function req(ip)
        local r = testing.request{ client_ip = ip }
        -- country is looked up lazily in the server: count the lookups
        return setmetatable(r, { __index = function(_, k) if k == "country" then reads = reads + 1 end end })
      end
      assert.equal(403, p.access(req("192.0.2.1")))
      assert.equal(0, reads)
      assert.equal(403, p.access(req("198.51.100.1")))
      assert.equal(1, reads)
    end)
  end)

  describe("origin_failover", function()
    it("settings are checked up front", function()
      assert.has_error(function() testing.load("origin_failover", {}) end,
        "origin_failover: origins must be a non-empty list of URLs")
      assert.has_error(function() testing.load("origin_failover", { origins = { "http://a/" }, mode = "random" }) end,
        'origin_failover: mode must be "ordered", "weighted" or "hash", got random')
      assert.has_error(function() testing.load("origin_failover", { origins = { "http://a/" }, on = { "5xx", "oops" } }) end,
        'origin_failover: on: origin.errors[2]: "oops" is not "unreachable", "timeout", "stall", "broken", "ended", "down", "4xx", "5xx" or a status code')
      assert.has_error(function() testing.load("origin_failover", { origins = { "http://a/", 3 } }) end,
        "origin_failover: origins[2] must be a URL string, got number")
      assert.has_error(function() testing.load("origin_failover", { origins = { "http://a/" }, replicas = 10 }) end,
        'origin_failover: replicas is only for mode = "hash"')
      assert.has_error(function() testing.load("origin_failover", { origins = { "http://a/" }, orgins = {} }) end,
        'origin_failover: unknown setting "orgins"')
      assert.has_error(function()
        testing.load("origin_failover", { origins = { { url = "http://a/", weight = -2 } }, mode = "weighted" })
      end, "origin_failover: origin.weighted[1]: weight must be a number >= 0, got -2")
    end)

    it("ordered: pulls {origin}/{stream}.flv and fails over on the listed errors only", function()
      local p = testing.load("origin_failover", { origins = { "http://a:8080/live/", "http://b/live", "http://c/{stream}/x.flv" } })
      local r = { prefix = "/flv/", url = "/flv/cam7.flv" }
      assert.equal("http://a:8080/live/cam7.flv", testing.origin(p, r, 1))
      assert.equal("http://b/live/cam7.flv", testing.origin(p, r, 2, "timeout"))
      assert.equal("http://c/cam7/x.flv", testing.origin(p, r, 3, "status 502"))
      assert.is_nil(testing.origin(p, r, 4, "unreachable"))
      assert.is_nil(testing.origin(p, r, 2, "status 404"))
      assert.is_nil(testing.origin(p, r, 2, "malformed"))
      -- in the middle of a live stream: a stall or a lost connection moves on, a clean end does not
      assert.equal("http://b/live/cam7.flv", testing.origin(p, r, 2, "stall"))
      assert.equal("http://b/live/cam7.flv", testing.origin(p, r, 2, "broken"))
      assert.equal("http://c/cam7/x.flv", testing.origin(p, r, 3, "down"))
      assert.is_nil(testing.origin(p, r, 2, "ended"))
      -- a re-check asks attempt 1 again
      assert.equal("http://a:8080/live/cam7.flv", testing.origin(p, r, 1, "recheck"))
    end)

    it("on = { ... } chooses the failures that fail over", function()
      local p = testing.load("origin_failover", { origins = { "http://a/", "http://b/" }, on = { "404" } })
      assert.equal("http://b/s.flv", testing.origin(p, { prefix = "/flv/", url = "/flv/s.flv" }, 2, "status 404"))
      assert.is_nil(testing.origin(p, { prefix = "/flv/", url = "/flv/s.flv" }, 2, "timeout"))
    end)

    it("weighted and hash modes", function()
      local w = testing.load("origin_failover", { mode = "weighted",
        origins = { { url = "http://a/", weight = 3 }, "http://b/" } })
      local n = { ["http://a/x.flv"] = 0, ["http://b/x.flv"] = 0 }
      for _ = 1, 8 do
        local u = testing.origin(w, { prefix = "/flv/", url = "/flv/x.flv" }, 1)
        n[u] = n[u] + 1
      end
      assert.same({ ["http://a/x.flv"] = 6, ["http://b/x.flv"] = 2 }, n)
      local h = testing.load("origin_failover", { mode = "hash", origins = { "http://a/", "http://b/", "http://c/" }, replicas = 40 })
      local first = testing.origin(h, { prefix = "/flv/", url = "/flv/q.flv" }, 1)
      assert.equal(first, testing.origin(h, { prefix = "/flv/", url = "/flv/q.flv" }, 1))
      local second = testing.origin(h, { prefix = "/flv/", url = "/flv/q.flv" }, 2, "unreachable")
      assert.are_not.equal(first, second)
      assert.truthy(second:match("^http://[abc]/q%.flv$"))
    end)
  end)

  describe("chain", function()
    local settings = {
      token = { secret = "s3cret" },
      acl = { country = { policy = "allow", values = { "KP" } }, ip = { policy = "allow", values = { "203.0.113.0/24" } } },
      origin = { origins = { "http://a/", "http://b/" } },
    }

    it("settings are checked up front", function()
      assert.has_error(function() testing.load("chain", {}) end, "chain: settings need at least one of token, acl, origin")
      assert.has_error(function() testing.load("chain", { tokens = {} }) end,
        'chain: unknown part "tokens" (known: token, acl, origin)')
      assert.has_error(function() testing.load("chain", { token = { secret = 5 } }) end,
        "chain: token: secret must be a non-empty string, got number")
      assert.has_error(function() testing.load("chain", { acl = { ip = { policy = "deny", values = { "::/200" } } } }) end,
        'chain: acl: acl.ip: values[1]: bad prefix length in CIDR "::/200" (0 to 128)')
      assert.has_error(function() testing.load("chain", { origin = { origins = {} } }) end,
        "chain: origin_failover: origins must be a non-empty list of URLs")
    end)

    it("token first, then the lists, then the origin", function()
      local p = testing.load("chain", settings)
      assert.is_nil(testing.run(p, signed("/flv/a.flv", { country = "DE" })))
      -- a bad token is refused before the lists look at anything
      assert.equal("403 Forbidden: invalid token\n",
        select(2, testing.run(p, { url = "/flv/a.flv?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=1", client_ip = "203.0.113.5" })))
      assert.equal("403 Forbidden: address not allowed\n",
        select(2, testing.run(p, signed("/flv/a.flv", { client_ip = "203.0.113.5", country = "KP" }))))
      assert.equal("403 Forbidden: country not allowed\n",
        select(2, testing.run(p, signed("/flv/a.flv", { country = "KP" }))))
      assert.equal("http://a/a.flv", testing.origin(p, { prefix = "/flv/", url = "/flv/a.flv" }, 1))
      assert.equal("http://b/a.flv", testing.origin(p, { prefix = "/flv/", url = "/flv/a.flv" }, 2, "status 503"))
    end)

    it("a chain of only some parts has only those phases", function()
      local p = testing.load("chain", { origin = { origins = { "http://a/" } } })
      assert.is_nil(p.access)
      assert.is_function(p.origin)
      local q = testing.load("chain", { acl = { country = { policy = "deny", values = { "DE" } } } })
      assert.is_nil(q.origin)
      assert.equal(403, testing.run(q, { country = "FR" }))
    end)
  end)
end)
