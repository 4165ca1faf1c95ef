-- The request object policies see inside the server: fields are read lazily from the C request
-- view through the FFI (struct fields directly, headers and country by small C functions), and
-- cached on first use. Nothing is copied that the policy does not read.
--
-- The C view lives only as long as the phase the request was made for: detach() is called when it
-- ends, and a lazy read after that raises "request is finished" instead of reading memory that
-- belongs to someone else by then. The view is held here, out of the policy's reach (a policy
-- that could index the cdata could read any memory).
-- What runs per request keeps to the rules that let LuaJIT compile it whole, on either build
-- (docs/policy-performance.md): no loops (they are in C, core/lua/fe_lua_ffi.c), no tail calls
-- (`local r = f(x); return r`), no Lua patterns.
local ffi = require "ffi"

local C = ffi.C
local ffi_string = ffi.string
local setmetatable, rawget, rawset = setmetatable, rawget, rawset
local tonumber, type, error, format, tostring, pairs = tonumber, type, error, string.format,
  tostring, pairs

ffi.cdef [[
typedef struct fe_span { uint32_t off, len; } fe_span;
typedef struct fe_header { fe_span name, value; } fe_header;
typedef struct fe_str { const char *p; size_t len; } fe_str;
typedef struct fe_req_view {
  const char *base;
  const fe_header *headers;
  int nheaders;
  fe_str method, path, query, host, stream, resource, client_ip, server_ip;
  double time;
  const void *geo;
  int8_t country_state;
  char country[3];
} fe_req_view;
int fe_lua_req_header(const fe_req_view *r, const char *name, size_t nlen, const char **out, size_t *len);
int fe_lua_req_country(fe_req_view *r);
]]

local util = require "flvedge.util"
local charge = require("flvedge.budget").charge
local parse_query, header_key, buffer, N = util.parse_query, util.header_key, util.buffer, util.native
local next = next
-- Tables made per request are made at their usual size: growing one is an allocation each time.
local new_tab = require "table.new"

local view_t = ffi.typeof("fe_req_view *")
-- req or req.headers -> the C view, while the phase runs
local views = setmetatable({}, { __mode = "k" })
local out_p = ffi.new("const char *[1]")
local out_len = ffi.new("size_t[1]")

local function str(s)
  if s.p == nil then return nil end
  local r = ffi_string(s.p, s.len); return r
end

-- req.headers: looked up by name in any case; `_` stands for `-` (req.headers.user_agent).
local headers_mt = {
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    local view = views[t]
    if view == nil then
      error(format("request is finished: req.headers[%q] was not read while it ran (keep the values "
        .. "a later request needs, not req)", name), 2)
    end
    local key = header_key(name)
    if C.fe_lua_req_header(view, key, #key, out_p, out_len) ~= 0 then return nil end
    local v = ffi_string(out_p[0], out_len[0])
    rawset(t, name, v)
    return v
  end,
}

-- req.args: each argument looked up by name when first read (util.query_arg: one C scan of the
-- query, no table of every argument, no loop in Lua); pairs(req.args) in policies (the sandbox's
-- pairs honours __pairs) reads them all.
local args_mt = {}
args_mt.__index = function(t, name)
  local view = views[t]
  if view == nil then
    error(format("request is finished: req.args[%q] was not read while it ran (keep the values a "
      .. "later request needs, not req)", tostring(name)), 2)
  end
  if type(name) ~= "string" then return nil end
  -- util.query_arg, straight from the request's bytes: the query is not made a string.
  local q = view.query
  local qn = tonumber(q.len)
  charge(qn)
  local out = buffer(qn + 1)
  local len = N.fe_lua_ffi_query_arg(q.p, qn, name, #name, out)
  if len < 0 then return nil end
  local v = ffi_string(out, len)
  rawset(t, name, v)
  return v
end
-- Once every argument is in the table, nothing is left to look up.
local args_read_mt = { __pairs = function(t) return next, t, nil end }
args_mt.__pairs = function(t)
  local view = views[t]
  if view == nil then
    error("request is finished: pairs(req.args) was not run while it ran (keep the values a later "
      .. "request needs, not req)", 2)
  end
  for k, v in pairs(parse_query(str(view.query) or "")) do rawset(t, k, v) end
  views[t] = nil
  setmetatable(t, args_read_mt)
  return next, t, nil
end

local fields = {
  method = function(v) local r = str(v.method); return r end,
  path = function(v) local r = str(v.path); return r end,
  query = function(v) return str(v.query) or "" end,
  host = function(v) local r = str(v.host); return r end,
  stream = function(v) local r = str(v.stream); return r end,
  resource = function(v) local r = str(v.resource); return r end,
  client_ip = function(v) local r = str(v.client_ip); return r end,
  server_ip = function(v) local r = str(v.server_ip); return r end,
  time = function(v) local r = tonumber(v.time); return r end,
  country = function(v)
    if C.fe_lua_req_country(v) == 1 then local r = ffi_string(v.country, 2); return r end
    return nil
  end,
  args = function(v)
    local a = setmetatable(new_tab(0, 4), args_mt)
    views[a] = v
    return a
  end,
  headers = function(v)
    local h = setmetatable(new_tab(0, 4), headers_mt)
    views[h] = v
    return h
  end,
  ctx = function() return {} end,
}

-- Absent fields (no country, no stream) are looked up once: remembered in t[-1].
local req_mt = {
  __index = function(t, k)
    local f = fields[k]
    if f == nil then return nil end
    local missing = rawget(t, -1)
    if missing and missing[k] then return nil end
    local view = views[t]
    if view == nil then
      error(format("request is finished: req.%s was not read while it ran (keep the values a later "
        .. "request needs, not req)", k), 2)
    end
    local v = f(view)
    if v == nil then
      if not missing then missing = {}; rawset(t, -1, missing) end
      missing[k] = true
      return nil
    end
    rawset(t, k, v)
    return v
  end,
}

local _M = {}

-- Wraps a C view (its address, as a number). Only the server calls this.
function _M.new(addr)
  local req = setmetatable(new_tab(0, 8), req_mt)
  views[req] = ffi.cast(view_t, addr)
  return req
end

-- The phase is over and its C view about to go: later lazy reads raise.
function _M.detach(req)
  local h = rawget(req, "headers")
  if h then views[h] = nil end
  local a = rawget(req, "args")
  if a then views[a] = nil end
  views[req] = nil
end

return _M
