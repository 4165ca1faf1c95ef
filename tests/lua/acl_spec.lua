local acl = require "flvedge.acl"
local testing = require "flvedge.testing"

local function ref(r) return testing.request{ url = "/flv/a.flv", headers = { Referer = r } } end
local function ua(u) return testing.request{ url = "/flv/a.flv", headers = { ["User-Agent"] = u } } end

describe("flvedge.acl", function()
  describe("policy types (Gcore semantics)", function()
    it('"allow" admits everything except the listed values', function()
      local a = acl.country{ policy = "allow", values = { "KP" } }
      assert.is_true(a:check(testing.request{ country = "DE" }))
      assert.same({ nil, 403, "country not allowed" }, { a:check(testing.request{ country = "KP" }) })
    end)

    it('"deny" refuses everything except the listed values', function()
      local a = acl.country{ policy = "deny", values = { "DE", "at" } }
      assert.is_true(a:check(testing.request{ country = "DE" }))
      assert.is_true(a:check(testing.request{ country = "AT" }))
      assert.same({ nil, 403, "country not allowed" }, { a:check(testing.request{ country = "FR" }) })
    end)

    it("takes the Gcore API names, and enabled = false admits everything", function()
      local a = acl.country{ policy_type = "deny", excepted_values = { "DE" } }
      assert.is_nil(a:check(testing.request{ country = "FR" }))
      local off = acl.country{ policy = "deny", values = { "DE" }, enabled = false }
      assert.is_true(off:check(testing.request{ country = "FR" }))
    end)
  end)

  describe("referer", function()
    -- referer_host as it was written in Lua patterns before it moved to C (fe_lua_ffi.c).
    local function reference_host(r)
      local s = r:find("://", 1, true)
      local rest = r
      if s and not r:sub(1, s - 1):find("[^%w+.-]") then rest = r:sub(s + 3) end
      local host = rest:match("^[^/?#]*")
      local at = host:find("@[^@]*$")
      if at then host = host:sub(at + 1) end
      if host:byte(1) == 91 then host = host:match("^(%[[^%]]*%])") or "" else host = host:match("^[^:]*") end
      host = host:lower()
      if host:byte(-1) == 46 then host = host:sub(1, -2) end
      return host
    end

    it("finds the host the way the Lua patterns did", function()
      local inputs = { "", "http://", "http:///x", "?q", "#f", "a", "A.B.", "..", "http://a:1", "x://y://z",
        "ht tp://a/", "h+t.t-p://a/", "://a/", "a://", "http://u@h@g:80/p", "http://[::1]:8080/",
        "http://[::1", "[v6]x", "HTTPS://User:PW@WWW.Example.COM.:443/p?q#f", "mailto:x@y", "a:b://c",
        "http://h?x://y", "//host/p", "http://é.com/", "http://a.b.c.d.e.f/", "\0://x", ("a."):rep(200) }
      for _, r in ipairs(inputs) do
        assert.equal(reference_host(r), acl.referer_host(r), r)
      end
    end)

    local block = acl.referer{ policy = "allow", values = { "evil.com", "*.bad.org" } }
    local only = acl.referer{ policy = "deny", values = { "example.com", "*.example.com" }, empty = "deny" }

    it("matches the host of the Referer URL, scheme optional, port and case ignored", function()
      assert.is_true(only:check(ref("https://example.com/page")))
      assert.is_true(only:check(ref("http://WWW.Example.COM:8080/x?y#z")))
      assert.is_true(only:check(ref("example.com/page")))
      assert.is_true(only:check(ref("https://user:pw@a.b.example.com/")))
      assert.is_true(only:check(ref("https://example.com./")))
      assert.is_nil(only:check(ref("https://example.com.evil.net/")))
      assert.is_nil(only:check(ref("https://notexample.com/")))
      assert.is_nil(only:check(ref("https://evil.net/?example.com")))
      assert.is_nil(only:check(ref("https://evil.net/example.com")))
      assert.is_nil(only:check(ref("https://example.com@evil.net/")))
    end)

    it("*.domain covers subdomains only, not the domain itself", function()
      assert.is_true(block:check(ref("https://bad.org/")))
      assert.is_nil(block:check(ref("https://x.bad.org/")))
      assert.is_nil(block:check(ref("https://a.b.bad.org/")))
      assert.is_nil(block:check(ref("http://evil.com")))
      assert.is_true(block:check(ref("http://sub.evil.com")))
      assert.is_true(block:check(ref("http://good.com")))
    end)

    it("a missing or empty Referer follows `empty`, default allow", function()
      assert.is_true(block:check(ref(nil)))
      assert.same({ nil, 403, "referer not allowed" }, { only:check(ref(nil)) })
      assert.is_nil(only:check(ref("")))
      assert.is_nil(only:check(ref("   ")))
      local only_open = acl.referer{ policy = "deny", values = { "example.com" } }
      assert.is_true(only_open:check(ref(nil)))
      assert.is_nil(only_open:check(ref("https://other.com/")))
      local block_closed = acl.referer{ policy = "allow", values = { "evil.com" }, empty = "deny" }
      assert.is_nil(block_closed:check(ref(nil)))
    end)

    it("a Referer without a host is in no list", function()
      for _, garbage in ipairs({ "://", "?q", "#", "[", "http://[::1", "\0\1", "http:///x" }) do
        assert.is_nil(only:check(ref(garbage)), garbage)
        assert.is_true(block:check(ref(garbage)), garbage)
      end
    end)

    it("a host longer than a host name can be is in no list", function()
      local long = "https://" .. string.rep(".", 8000) .. "example.com/"
      assert.is_nil(only:check(ref(long)))
      assert.is_true(block:check(ref("https://" .. string.rep("a.", 130) .. "bad.org/")))
      assert.is_nil(block:check(ref("https://" .. string.rep("a.", 120) .. "bad.org/")))
    end)

    it("extracts hosts", function()
      assert.equal("example.com", acl.referer_host("HTTPS://Example.com:443/a"))
      assert.equal("[::1]", acl.referer_host("http://[::1]:8080/"))
      assert.equal("b.com", acl.referer_host("http://a@b.com/"))
      assert.equal("", acl.referer_host("http:///x"))
    end)

    it("raises on bad settings, naming the value", function()
      assert.has_error(function() acl.referer{ policy = "deny", values = { "https://example.com/" } } end,
        'acl.referer: values[1] = "https://example.com/" is not a host name or "*.domain" (no scheme, port or path)')
      local not_host = ' is not a host name or "*.domain" (no scheme, port or path)'
      assert.has_error(function() acl.referer{ policy = "deny", values = { "ex*.com" } } end,
        'acl.referer: values[1] = "ex*.com"' .. not_host)
      assert.has_error(function() acl.referer{ policy = "deny", values = { "*." } } end,
        'acl.referer: values[1] = "*."' .. not_host)
      assert.has_error(function() acl.referer{ policy = "deny", values = { "a..b" } } end,
        'acl.referer: values[1] = "a..b"' .. not_host)
      assert.has_error(function() acl.referer{ policy = "deny", values = { "" } } end,
        'acl.referer: values[1] is empty; use empty = "allow" | "deny" for requests without a Referer')
      assert.has_error(function() acl.referer{ policy = "deny", values = {}, empty = "maybe" } end,
        'acl.referer: empty must be "allow" or "deny", got "maybe"')
      assert.has_error(function() acl.referer{ policy = "block", values = {} } end,
        'acl.referer: policy must be "allow" (block the listed values) or "deny" (admit only the listed values), got "block"')
      assert.has_error(function() acl.referer{ values = {} } end,
        'acl.referer: policy must be "allow" (block the listed values) or "deny" (admit only the '
        .. "listed values), got nothing")
      assert.has_error(function() acl.referer{ policy = "deny", values = "example.com" } end,
        "acl.referer: values must be a list, got string")
      assert.has_error(function() acl.referer{ policy = "deny", values = { x = "example.com" } } end,
        'acl.referer: values must be a list (found key "x")')
      assert.has_error(function() acl.referer{ policy = "deny", values = { 1 } } end,
        "acl.referer: values[1] must be a string, got number")
      assert.has_error(function() acl.referer{ policy = "deny", value = {} } end,
        'acl.referer: unknown setting "value"')
      assert.has_error(function() acl.referer("deny") end, "acl.referer: settings must be a table, got string")
    end)
  end)

  describe("user_agent", function()
    it("exact strings are case-sensitive and whole", function()
      local a = acl.user_agent{ policy = "allow", values = { "BadBot/1.0" } }
      assert.is_nil(a:check(ua("BadBot/1.0")))
      assert.is_true(a:check(ua("badbot/1.0")))
      assert.is_true(a:check(ua("BadBot/1.0 extra")))
    end)

    it("~pattern is a case-sensitive Lua pattern, ~*pattern case-insensitive", function()
      local a = acl.user_agent{ policy = "allow", values = { "~^curl/%d", "~*bot%f[%A]", "~*%Uspider" } }
      assert.is_nil(a:check(ua("curl/8.1")))
      assert.is_true(a:check(ua("CURL/8.1")))
      assert.is_nil(a:check(ua("Googlebot/2.1")))
      assert.is_nil(a:check(ua("some BOT")))
      assert.is_true(a:check(ua("bottle")))
      -- %U keeps its meaning (not uppercase) after lowercasing the pattern
      assert.is_nil(a:check(ua("xSPIDER")))
      assert.is_true(a:check(ua("Mozilla/5.0")))
    end)

    it("plain-string patterns (matched in C) find what string.find finds", function()
      local values = { "~*bot", "~*Spider", "~Mozilla", "~*x", "~*" .. ("a"):rep(300) }
      local a = acl.user_agent{ policy = "allow", values = values }
      local subjects = { "Googlebot/2.1", "GOOGLEBOT", "bo", "spiDER", "mozilla", "Mozilla/5.0",
        "X", ("a"):rep(299), ("A"):rep(300), ("b"):rep(2000) .. "BoT", "\0bot" }
      for _, u in ipairs(subjects) do
        local want = u:lower():find("bot", 1, true) or u:lower():find("spider", 1, true)
          or u:find("Mozilla", 1, true) or u:lower():find("x", 1, true)
          or u:lower():find(("a"):rep(300), 1, true)
        assert.equal(not want or nil, a:check(ua(u)), u)
      end
    end)

    it('"" means no User-Agent header (missing or empty)', function()
      local a = acl.user_agent{ policy = "allow", values = { "" } }
      assert.is_nil(a:check(ua(nil)))
      assert.is_nil(a:check(ua("")))
      assert.is_true(a:check(ua("curl/8")))
      local b = acl.user_agent{ policy = "deny", values = { "~Mozilla" } }
      assert.is_nil(b:check(ua(nil)))
      assert.is_true(b:check(ua("Mozilla/5.0")))
    end)

    it("raises on malformed patterns, and on | that looks like PCRE alternation", function()
      local bad = {
        ["~[a"] = "missing ']'", ["~(a"] = "unfinished capture", ["~a)"] = "')' without '('",
        ["~%"] = "ends with '%'", ["~%1"] = "back reference %1 to no closed capture",
        ["~(a)%2"] = "back reference %2 to no closed capture", ["~%f"] = "%f needs a [set]",
        ["~%b("] = "%b needs two characters", ["~*"] = "empty pattern", ["~"] = "empty pattern",
        ["~*[%"] = "missing ']'",
        ["~(Chrome|Firefox)"] = "'|' is not alternation in Lua patterns (list each value separately, or write %|)",
      }
      for value, reason in pairs(bad) do
        assert.has_error(function() acl.user_agent{ policy = "allow", values = { value } } end,
          string.format("acl.user_agent: values[1] = %q: bad Lua pattern: %s", value, reason))
      end
      assert.has_error(function() acl.user_agent{ policy = "allow", values = { "~a|b" } } end,
        'acl.user_agent: values[1] = "~a|b": bad Lua pattern: \'|\' is not alternation in Lua patterns '
        .. "(list each value separately, or write %|)")
      -- and accepts tricky good ones
      local ok = acl.user_agent{ policy = "allow", values = { "~[]]", "~[^%]]x", "~(a)%1", "~%|", "~[|]", "~%bxy", "~()" } }
      assert.is_nil(ok:check(ua("a|b")))
      assert.is_nil(ok:check(ua("aa")))
    end)
  end)

  describe("country", function()
    it("an unknown country is in no list", function()
      local block = acl.country{ policy = "allow", values = { "KP" } }
      local only = acl.country{ policy = "deny", values = { "DE" } }
      assert.is_true(block:check(testing.request{}))
      assert.is_nil(only:check(testing.request{}))
    end)

    it("raises on a code that is not alpha-2", function()
      assert.has_error(function() acl.country{ policy = "deny", values = { "DE", "DEU" } } end,
        'acl.country: values[2] = "DEU" is not an ISO 3166-1 alpha-2 code')
    end)
  end)

  describe("ip", function()
    local only = acl.ip{ policy = "deny", values = { "10.0.0.0/8", "2001:db8::/32" } }
    local block = acl.ip{ policy = "allow", values = { "192.0.2.1/32", "2001:db8:bad::/48" } }

    it("matches IPv4 and IPv6 CIDRs", function()
      assert.is_true(only:check(testing.request{ client_ip = "10.9.8.7" }))
      assert.is_true(only:check(testing.request{ client_ip = "2001:db8:1::5" }))
      assert.same({ nil, 403, "address not allowed" }, { only:check(testing.request{ client_ip = "11.0.0.1" }) })
      assert.is_nil(only:check(testing.request{ client_ip = "2001:db9::1" }))
      assert.is_nil(block:check(testing.request{ client_ip = "192.0.2.1" }))
      assert.is_true(block:check(testing.request{ client_ip = "192.0.2.2" }))
      assert.is_nil(block:check(testing.request{ client_ip = "2001:db8:bad:1::1" }))
      assert.is_true(block:check(testing.request{ client_ip = "2001:db8:bae::1" }))
    end)

    it("IPv4 rules match IPv4-mapped clients", function()
      assert.is_true(only:check(testing.request{ client_ip = "::ffff:10.1.1.1" }))
      assert.is_nil(block:check(testing.request{ client_ip = "::ffff:192.0.2.1" }))
    end)

    it("an unparsable client address is in no list", function()
      assert.is_nil(only:check(testing.request{ client_ip = "garbage" }))
      assert.is_true(block:check(testing.request{ client_ip = "garbage" }))
    end)

    it("raises on a bad CIDR, naming it", function()
      assert.has_error(function() acl.ip{ policy = "deny", values = { "10.0.0.0/8", "10.0.0.0/40" } } end,
        'acl.ip: values[2]: bad prefix length in CIDR "10.0.0.0/40" (0 to 32)')
      assert.has_error(function() acl.ip{ policy = "deny", values = { "example.com" } } end,
        'acl.ip: values[1]: bad address in CIDR "example.com"')
    end)
  end)

  describe("compile", function()
    it("orders lists cheapest first and skips disabled ones", function()
      local lists = acl.compile({
        country = { policy = "deny", values = { "DE" } },
        user_agent = { policy = "allow", values = { "x" } },
        referer = { policy = "allow", values = { "x.com" }, enabled = false },
        ip = { policy = "allow", values = { "10.0.0.0/8" } },
      }, "p")
      assert.equal(3, #lists)
      assert.equal("address not allowed", lists[1].reason)
      assert.equal("user agent not allowed", lists[2].reason)
      assert.equal("country not allowed", lists[3].reason)
    end)

    it("names the list in errors", function()
      assert.has_error(function() acl.compile({ referrer = {} }, "p") end,
        'p: unknown list "referrer" (known: ip, referer, user_agent, country)')
      assert.has_error(function() acl.compile({ ip = { policy = "deny", values = { "x" } } }, "p") end,
        'p: acl.ip: values[1]: bad address in CIDR "x"')
    end)
  end)
end)
