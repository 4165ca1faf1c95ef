-- flvedge.testing: run a policy in busted without a server. testing.request builds a request
-- with the same fields as the server's (docs/policies.md), testing.run calls its access phase and
-- checks the answer the way the server does; testing.origin and testing.cache run those phases.
--
--   local testing = require "flvedge.testing"
--   local policy = testing.load("secure_token", { secret = "s3cret" })
--   local status, body = testing.run(policy, { url = "/flv/a.flv?md5=x&expires=1" })
--   assert.equal(403, status)
local util = require "flvedge.util"
local boot = require "flvedge.boot" -- the server's own checks of what a hook returned

local type, tostring, error, pairs, setmetatable, getmetatable, rawget, require =
  type, tostring, error, pairs, setmetatable, getmetatable, rawget, require
local format, find, sub, lower, match = string.format, string.find, string.sub, string.lower,
  string.match

local _M = {}

local header_key = util.header_key

-- Looked up by name in any case, `_` for `-`, as in the server.
local headers_mt = {
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    return rawget(t, 0)[header_key(name)]
  end,
  __newindex = function(t, name, value)
    rawget(t, 0)[header_key(tostring(name))] = value
  end,
}

local req_mt = {}

local FIELDS = {
  method = true, url = true, path = true, query = true, host = true, headers = true, client_ip = true,
  server_ip = true, country = true, stream = true, resource = true, time = true, ctx = true, args = true,
  prefix = true,
}

-- The stream name as the server takes it (core/http/fe_http_live.c, fe_live_stream_name): the path
-- after the resource's prefix up to ".flv", when that is a name the server accepts (1 to 200 of
-- A-Z a-z 0-9 _ - . /, no "..", no "//", no "/" first or last); else nil.
local function stream_of(path, prefix)
  local pre = #prefix
  if #path < pre + 5 or sub(path, 1, pre) ~= prefix or sub(path, -4) ~= ".flv" then return nil end
  local name = sub(path, pre + 1, -5)
  if #name > 200 or find(name, "[^%w_%-%./]") or find(name, "..", 1, true) or find(name, "//", 1, true)
    or find(name, "^/") or find(name, "/$") then
    return nil
  end
  return name
end

-- t: { method = "GET", url = "/flv/a.flv?x=1" (or path = and query =), host =, headers = {...},
-- client_ip = "127.0.0.1", server_ip = "127.0.0.1", country = "DE", prefix = "/flv/" (the
-- resource's; "/" when not given, as in the server), stream = (from the path as the server takes
-- it, see stream_of; false for none), resource = "live", time = os.time(), ctx = {} }. Returns a
-- request with the server's field names.
function _M.request(t)
  t = t or {}
  if type(t) ~= "table" then error("testing.request: expected a table, got " .. type(t), 2) end
  util.check_keys(t, FIELDS, "testing.request", "field", nil, 2)
  local path, query = t.path, t.query
  if t.url ~= nil then
    if type(t.url) ~= "string" then error("testing.request: url must be a string", 2) end
    local q = find(t.url, "?", 1, true)
    path = q and sub(t.url, 1, q - 1) or t.url
    query = q and sub(t.url, q + 1) or ""
  end
  path = path or "/"
  query = query or ""

  local headers = setmetatable({ [0] = {} }, headers_mt)
  for name, value in pairs(t.headers or {}) do headers[name] = value end
  local host = t.host or headers.host
  if host then
    -- Lowercase, without the port; an IPv6 literal keeps its brackets (as the server does).
    host = lower(host)
    host = match(host, "^(%[[^%]]*%])") or match(host, "^[^:]*")
    if headers.host == nil then headers.host = t.host end
  end

  local prefix = t.prefix or "/"
  if type(prefix) ~= "string" then error("testing.request: prefix must be a string", 2) end
  local stream = t.stream
  if stream == nil then
    stream = stream_of(path, prefix)
  elseif stream == false then
    stream = nil
  end

  local req = {
    method = t.method or "GET",
    host = host,
    path = path,
    query = query,
    args = t.args or util.parse_query(query),
    headers = headers,
    client_ip = t.client_ip or "127.0.0.1",
    server_ip = t.server_ip or "127.0.0.1",
    country = t.country,
    stream = stream,
    resource = t.resource or "test",
    time = t.time or os.time(),
    ctx = t.ctx or {},
  }
  return setmetatable(req, req_mt)
end

-- The headers a request was built with, as a plain table (lowercase names).
function _M.headers_of(req)
  local out = {}
  for k, v in pairs(rawget(req.headers, 0) or {}) do out[k] = v end
  return out
end

local function as_request(req)
  if getmetatable(req) == req_mt then return req end
  return _M.request(req)
end

-- A policy as the server would load it: a module name on package.path, a .lua file, a factory
-- function or a table. Factories get settings (or {}).
function _M.load(spec, settings)
  local p = spec
  if type(p) == "string" then
    if find(p, "%.lua$") then
      local chunk, err = loadfile(p)
      if not chunk then error(err, 2) end
      p = chunk()
    else
      p = require(p)
    end
  end
  if type(p) == "function" then p = p(settings or {}) end
  if type(p) ~= "table" then error("testing.load: expected a policy table, got " .. type(p), 2) end
  return p
end

-- Calls policy.access(req) (req: a built request, or the table for testing.request) and checks
-- the answer as the server does. Returns nil when admitted, else status, body, headers.
function _M.run(policy, req)
  if type(policy) ~= "table" then error("testing.run: expected a policy table, got " .. type(policy), 2) end
  if policy.access == nil then return nil end
  req = as_request(req)
  local status, body, headers = policy.access(req)
  if status == nil then return nil end
  local code
  code, body = boot.check_denial(status, body, headers)
  return code, body, headers
end

-- Calls policy.origin(req, attempt, last_error); returns the URL (or nil), checked as the
-- server does.
function _M.origin(policy, req, attempt, last_error)
  if type(policy) ~= "table" or type(policy.origin) ~= "function" then
    error("testing.origin: the policy has no origin phase", 2)
  end
  return boot.check_origin_url(policy.origin(as_request(req), attempt or 1, last_error))
end

local CACHE_RES = {
  status = true, size = true, content_type = true, etag = true, last_modified = true,
  cache_control = true,
}

-- Calls policy.cache(req, res) as the server does: res nil for the lookup call (before the cache
-- is looked at), or the origin's answer { status = 200, size =, content_type =, etag =,
-- last_modified =, cache_control = } for the answer call (status defaults to 200; the others may
-- be nil, as the server gives them when the origin did not send them). Returns the decision table
-- checked as the server checks it (boot.lua check_cache), or nil when the hook kept the defaults.
function _M.cache(policy, req, res)
  if type(policy) ~= "table" or type(policy.cache) ~= "function" then
    error("testing.cache: the policy has no cache phase", 2)
  end
  if res ~= nil then
    if type(res) ~= "table" then error("testing.cache: res must be a table or nil, got " .. type(res), 2) end
    util.check_keys(res, CACHE_RES, "testing.cache: res", "field", nil, 2)
    local r = {}
    for k, v in pairs(res) do r[k] = v end
    r.status = r.status or 200
    res = r
  end
  return boot.check_cache(policy.cache(as_request(req), res), res and "answer" or "lookup")
end

-- A response for log(req, res): { status = 200, bytes_sent = 0, duration = 0, cache_status = "-" }.
function _M.res(t)
  t = t or {}
  return {
    status = t.status or 200,
    bytes_sent = t.bytes_sent or 0,
    duration = t.duration or 0,
    cache_status = t.cache_status or "-",
  }
end

return _M
