local testing = require "flvedge.testing"

describe("flvedge.testing", function()
  describe("request", function()
    it("has the server's fields, with defaults", function()
      local r = testing.request{ prefix = "/flv/", url = "/flv/cam1.flv?token=a%20b&x=1&x=2" }
      assert.equal("GET", r.method)
      assert.equal("/flv/cam1.flv", r.path)
      assert.equal("token=a%20b&x=1&x=2", r.query)
      assert.same({ token = "a b", x = "2" }, r.args)
      assert.equal("cam1", r.stream)
      assert.equal("127.0.0.1", r.client_ip)
      assert.equal("127.0.0.1", r.server_ip)
      assert.is_nil(r.country)
      assert.is_nil(r.host)
      assert.is_number(r.time)
      assert.same({}, r.ctx)
      assert.equal("test", r.resource)
    end)

    it("looks headers up in any case, _ for -", function()
      local r = testing.request{ headers = { ["User-Agent"] = "curl/8", REFERER = "https://a/", ["X-Forwarded-For"] = "1.2.3.4" } }
      assert.equal("curl/8", r.headers["user-agent"])
      assert.equal("curl/8", r.headers.user_agent)
      assert.equal("curl/8", r.headers["USER-AGENT"])
      assert.equal("https://a/", r.headers.referer)
      assert.equal("1.2.3.4", r.headers.x_forwarded_for)
      assert.is_nil(r.headers.cookie)
      assert.is_nil(r.headers[1])
      assert.same({ ["user-agent"] = "curl/8", referer = "https://a/", ["x-forwarded-for"] = "1.2.3.4" },
        testing.headers_of(r))
    end)

    it("takes the host from host= or the Host header: lowercase, no port", function()
      assert.equal("example.com", testing.request{ host = "Example.COM:8080" }.host)
      local r = testing.request{ headers = { Host = "CDN.example.com:443" } }
      assert.equal("cdn.example.com", r.host)
      assert.equal("CDN.example.com:443", r.headers.host)
      assert.equal("[::1]", testing.request{ host = "[::1]:8080" }.host)
    end)

    it("takes the stream as the server does: the path after the prefix up to .flv, or the one given", function()
      assert.equal("abc", testing.request{ prefix = "/live/x/", path = "/live/x/abc.flv" }.stream)
      assert.equal("x/abc", testing.request{ prefix = "/live/", path = "/live/x/abc.flv" }.stream)
      assert.equal("live/x/abc", testing.request{ path = "/live/x/abc.flv" }.stream) -- prefix "/"
      assert.equal("a.b-c_1", testing.request{ prefix = "/flv/", path = "/flv/a.b-c_1.flv" }.stream)
      assert.is_nil(testing.request{ prefix = "/flv/", path = "/live/abc.flv" }.stream) -- not this resource
      assert.is_nil(testing.request{ prefix = "/flv/", path = "/flv/.flv" }.stream)
      for _, bad in ipairs({ "a..b", "a//b", "/a", "a/", "a b", "a%20b", ("x"):rep(201) }) do
        assert.is_nil(testing.request{ prefix = "/flv/", path = "/flv/" .. bad .. ".flv" }.stream, bad)
      end
      assert.equal(("x"):rep(200), testing.request{ prefix = "/flv/", path = "/flv/" .. ("x"):rep(200) .. ".flv" }.stream)
      assert.is_nil(testing.request{ path = "/index.html" }.stream)
      assert.equal("given", testing.request{ path = "/flv/a.flv", stream = "given" }.stream)
      assert.is_nil(testing.request{ path = "/flv/a.flv", stream = false }.stream)
    end)

    it("takes path and query apart too", function()
      local r = testing.request{ path = "/p", query = "a=1", method = "HEAD", client_ip = "::1", country = "DE",
        time = 1000.5, resource = "live" }
      assert.same({ "/p", "a=1", "HEAD", "::1", "DE", 1000.5, "live", "1" },
        { r.path, r.query, r.method, r.client_ip, r.country, r.time, r.resource, r.args.a })
    end)

    it("raises on unknown fields (a typo would silently test something else)", function()
      assert.has_error(function() testing.request{ client = "1.2.3.4" } end, 'testing.request: unknown field "client"')
      assert.error_matches(function() testing.request{ url = 5 } end, "testing.request: url must be a string", nil, true)
    end)
  end)

  describe("run", function()
    it("returns nothing when admitted", function()
      assert.is_nil(testing.run({ access = function() end }, { url = "/" }))
      assert.is_nil(testing.run({}, { url = "/" }))
    end)

    it("returns status, body, headers when denied", function()
      local p = { access = function(req)
        if req.args.key ~= "k" then return 403, "no\n", { ["X-Why"] = "key" } end
      end }
      local status, body, headers = testing.run(p, { url = "/a?key=x" })
      assert.equal(403, status)
      assert.equal("no\n", body)
      assert.same({ ["X-Why"] = "key" }, headers)
      assert.is_nil(testing.run(p, testing.request{ url = "/a?key=k" }))
    end)

    it("checks the answer as the server does", function()
      assert.has_error(function() testing.run({ access = function() return 99 end }, {}) end,
        "access: status must be an integer from 200 to 599 (a 1xx is no answer), got 99")
      assert.has_error(function() testing.run({ access = function() return "nope" end }, {}) end,
        "access: status must be an integer from 200 to 599 (a 1xx is no answer), got nope")
      assert.has_error(function() testing.run({ access = function() return 403, nil, "X: y" end }, {}) end,
        "access: headers must be a table of name = value")
      assert.equal("12", select(2, testing.run({ access = function() return "403", 12 end }, {})))
      assert.has_error(function()
        testing.run({ access = function() return 302, "", { Location = "/x\r\nSet-Cookie: a=b" } end }, {})
      end, 'access: bad response header "Location": a control byte in its value')
      assert.has_error(function()
        testing.run({ access = function() return 403, "", { ["Bad Name"] = "v" } end }, {})
      end, 'access: bad response header "Bad Name"')
    end)

    it("refuses a 1xx status: a denial is a final answer", function()
      for _, code in ipairs({ 100, 101, 103, 199 }) do
        assert.has_error(function() testing.run({ access = function() return code end }, {}) end,
          "access: status must be an integer from 200 to 599 (a 1xx is no answer), got " .. code)
      end
    end)

    it("refuses control bytes in header values, but a tab", function()
      for _, v in ipairs({ "a\0b", "a\rb", "a\nb", "a\1b", "a\31b", "a\127b" }) do
        assert.has_error(function()
          testing.run({ access = function() return 403, "", { ["X-A"] = v } end }, {})
        end, 'access: bad response header "X-A": a control byte in its value')
      end
      local _, _, headers = testing.run({ access = function() return 403, "", { ["X-A"] = "a\tb\195\169" } end }, {})
      assert.same({ ["X-A"] = "a\tb\195\169" }, headers)
    end)

    it("refuses framing headers, in any case", function()
      for _, name in ipairs({ "Content-Length", "transfer-encoding", "CONNECTION", "Upgrade", "Keep-Alive",
                              "Trailer" }) do
        assert.has_error(function()
          testing.run({ access = function() return 403, "", { [name] = "0" } end }, {})
        end, 'access: response header "' .. name .. '" frames the answer: the server sets it, not a policy')
      end
    end)

    it("shows a bad header name's bytes escaped", function()
      assert.has_error(function()
        testing.run({ access = function() return 403, "", { ["X\r\nA"] = "v" } end }, {})
      end, 'access: bad response header "X\\x0D\\x0AA"')
    end)

    it("gives 204 and 304 no body", function()
      for _, code in ipairs({ 204, 304 }) do
        local status, body = testing.run({ access = function() return code, "ignored" end }, {})
        assert.equal(code, status)
        assert.is_nil(body)
      end
    end)

    it("shares req.ctx between the phases of one request", function()
      local p = {
        access = function(req) req.ctx.seen = true end,
        log = function(req, res) return { seen = tostring(req.ctx.seen), status = res.status } end,
      }
      local r = testing.request{}
      testing.run(p, r)
      assert.same({ seen = "true", status = 200 }, p.log(r, testing.res()))
    end)
  end)

  it("res has the server's fields", function()
    assert.same({ status = 200, bytes_sent = 0, duration = 0, cache_status = "-" }, testing.res())
    assert.equal(404, testing.res{ status = 404 }.status)
  end)

  it("origin calls the origin phase and checks the answer", function()
    local p = { origin = function(req, attempt) if attempt < 3 then return "http://o" .. attempt .. "/" .. req.stream end end }
    assert.equal("http://o1/cam", testing.origin(p, { prefix = "/flv/", url = "/flv/cam.flv" }))
    assert.equal("http://o2/cam", testing.origin(p, { prefix = "/flv/", url = "/flv/cam.flv" }, 2, "timeout"))
    assert.is_nil(testing.origin(p, { prefix = "/flv/", url = "/flv/cam.flv" }, 3, "timeout"))
    assert.has_error(function() testing.origin({ origin = function() return 5 end }, {}) end,
      "origin: expected a URL string or nil, got number")
  end)

  describe("cache", function()
    local p = { cache = function(req, res) return req.ctx.answer and req.ctx.answer(req, res) end }
    local function with(answer) return { url = "/v/a.flv?x=1", ctx = { answer = answer } } end

    it("runs the lookup call without res and the answer call with it", function()
      local seen
      assert.same({ key = "/v/a.flv", keep_query = false },
        testing.cache(p, with(function(req, res) seen = res; return { key = req.path, keep_query = false } end)))
      assert.is_nil(seen)
      assert.same({ ttl = 60, cacheable = true }, testing.cache(p, with(function(req, res)
        seen = res
        return { ttl = 60, cacheable = true }
      end), { etag = '"e"', cache_control = "max-age=5" }))
      assert.same({ status = 200, etag = '"e"', cache_control = "max-age=5" }, seen)
    end)

    it("gives nil when the hook keeps the defaults", function()
      assert.is_nil(testing.cache(p, with(nil)))
      assert.is_nil(testing.cache(p, with(nil), { status = 404 }))
    end)

    it("checks the answer as the server does", function()
      local function refused(answer, res, msg)
        assert.error_matches(function() testing.cache(p, with(function() return answer end), res) end, msg, nil, true)
      end
      refused({ key = "a b" }, nil, "cache: key must be visible ASCII (no space, control or 8-bit byte): byte 2 is \\x20")
      refused({ key = "" }, nil, "cache: key must be 1 to 511 bytes, got 0")
      refused({ key = ("x"):rep(600) }, nil, "cache: key must be 1 to 511 bytes, got 600")
      refused({ key = "k\128" }, nil, "byte 2 is \\x80")
      refused({ ttl = 5 }, nil, 'cache: unknown field "ttl" in the lookup call\'s answer (it may set key, keep_query, bypass)')
      refused({ key = "k" }, {}, 'cache: unknown field "key" in the answer call\'s answer (it may set ttl, cacheable, bypass)')
      refused({ ttl = -1 }, {}, "cache: ttl must be a finite number of seconds >= 0, got -1")
      refused({ ttl = 0 / 0 }, {}, "cache: ttl must be a finite number of seconds >= 0")
      refused({ ttl = math.huge }, {}, "cache: ttl must be a finite number of seconds >= 0, got inf")
      refused({ ttl = "60" }, {}, "cache: ttl must be a number, got string")
      refused({ bypass = 1 }, {}, "cache: bypass must be a boolean, got number")
      refused({ keep_query = "yes" }, nil, "cache: keep_query must be a boolean, got string")
      refused({ [1] = true }, nil, "cache: unknown field 1")
      refused("key", nil, "cache: expected a table or nil, got string")
      assert.same({ ttl = 0, bypass = true }, testing.cache(p, with(function() return { ttl = 0, bypass = true } end), {}))
    end)

    it("refuses a res field the server does not give, and a policy without cache", function()
      assert.error_matches(function() testing.cache(p, with(nil), { status = 200, length = 5 }) end,
        'testing.cache: res: unknown field "length"', nil, true)
      assert.error_matches(function() testing.cache({}, {}) end, "testing.cache: the policy has no cache phase", nil, true)
    end)
  end)

  it("load makes a policy from a module name, a factory or a file", function()
    local p = testing.load("secure_token", { secret = "s" })
    assert.is_function(p.access)
    assert.is_function(testing.load(function(s) return { access = function() return s.code end } end, { code = 451 }).access)
    local base = os.tmpname()
    local path = base .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write("return { access = function() return 418 end }")
    f:close()
    assert.equal(418, testing.run(testing.load(path), {}))
    os.remove(path)
    os.remove(base)
    assert.error_matches(function() testing.load(function() return 5 end) end,
      "testing.load: expected a policy table, got number", nil, true)
  end)
end)
