-- The request object policies see inside the server: fields are read lazily from the C request
-- view through the FFI (struct fields directly, headers and country by small C functions), and
-- cached on first use. Nothing is copied that the policy does not read.
--
-- The C view lives only as long as the phase the request was made for: detach() is called when it
-- ends, and a lazy read after that raises "request is finished" instead of reading memory that
-- belongs to someone else by then. The view is held here, out of the policy's reach (a policy
-- that could index the cdata could read any memory).
local ffi = require "ffi"

local C = ffi.C
local ffi_string = ffi.string
local setmetatable, rawget, rawset = setmetatable, rawget, rawset
local tonumber, type, error, format = tonumber, type, error, string.format

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
local parse_query, header_key = util.parse_query, util.header_key

local view_t = ffi.typeof("fe_req_view *")
-- req or req.headers -> the C view, while the phase runs
local views = setmetatable({}, { __mode = "k" })
local out_p = ffi.new("const char *[1]")
local out_len = ffi.new("size_t[1]")

local function str(s)
  if s.p == nil then return nil end
  return ffi_string(s.p, s.len)
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

local fields = {
  method = function(v) return str(v.method) end,
  path = function(v) return str(v.path) end,
  query = function(v) return str(v.query) or "" end,
  host = function(v) return str(v.host) end,
  stream = function(v) return str(v.stream) end,
  resource = function(v) return str(v.resource) end,
  client_ip = function(v) return str(v.client_ip) end,
  server_ip = function(v) return str(v.server_ip) end,
  time = function(v) return tonumber(v.time) end,
  country = function(v)
    if C.fe_lua_req_country(v) == 1 then return ffi_string(v.country, 2) end
    return nil
  end,
  args = function(v)
    return parse_query(str(v.query) or "")
  end,
  headers = function(v)
    local h = setmetatable({}, headers_mt)
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
  local req = setmetatable({}, req_mt)
  views[req] = ffi.cast(view_t, addr)
  return req
end

-- The phase is over and its C view about to go: later lazy reads raise.
function _M.detach(req)
  local h = rawget(req, "headers")
  if h then views[h] = nil end
  views[req] = nil
end

return _M
