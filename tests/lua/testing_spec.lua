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
        "access: status must be an integer from 100 to 599, got 99")
      assert.has_error(function() testing.run({ access = function() return "nope" end }, {}) end,
        "access: status must be an integer from 100 to 599, got nope")
      assert.has_error(function() testing.run({ access = function() return 403, nil, "X: y" end }, {}) end,
        "access: headers must be a table of name = value")
      assert.equal("12", select(2, testing.run({ access = function() return "403", 12 end }, {})))
      assert.has_error(function()
        testing.run({ access = function() return 302, "", { Location = "/x\r\nSet-Cookie: a=b" } end }, {})
      end, 'access: bad response header "Location"')
      assert.has_error(function()
        testing.run({ access = function() return 403, "", { ["Bad Name"] = "v" } end }, {})
      end, 'access: bad response header "Bad Name"')
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
