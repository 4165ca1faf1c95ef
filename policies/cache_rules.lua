-- cache_rules: what a VOD resource caches and for how long, by path. settings (all optional):
--   { rules = { { match = "%.flv$", ttl = 86400 },              -- a Lua pattern on req.path
--               { prefix = "/videos/live-archive/", ttl = 60 }, -- or a plain path prefix
--               { match = "%.m3u8$", bypass = true } },         -- never cached
--     default_ttl = 3600,            -- no rule matched, or the rule has no ttl (nil: cache_ttl)
--     keep_query = false,            -- true: the query goes to the origin and into the key
--     strip_args = { "token", "expires", "md5", "sign", "auth_key" }, -- never in the key
--     cache_errors = { [404] = 30 },  -- 4xx/5xx cached only when listed, with that ttl
--     ignore_origin_no_store = false } -- true: cache even when the origin says no-store/private
-- The first rule that matches wins. Lookup call: bypass from the rule; with keep_query, the key is
-- the path and the query without strip_args, its arguments sorted (so ?b=2&a=1 and ?a=1&b=2 are
-- one object). Answer call: 200 and 206 are cacheable for the rule's ttl, the statuses listed in
-- cache_errors for theirs, anything else is not; an origin `Cache-Control: no-store` or `private`
-- is not cached either unless ignore_origin_no_store.
local util = require "flvedge.util"
local acl = require "flvedge.acl"

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local format, find, sub, lower, gsub, byte = string.format, string.find, string.sub, string.lower,
  string.gsub, string.byte
local concat, sort = table.concat, table.sort
local huge = math.huge
local check_keys, split, trim, unescape = util.check_keys, util.split, util.trim, util.unescape

local KEYS = { rules = true, default_ttl = true, keep_query = true, strip_args = true,
  cache_errors = true, ignore_origin_no_store = true }
local RULE_KEYS = { match = true, prefix = true, ttl = true, bypass = true }
local STRIP_DEFAULT = { "token", "expires", "md5", "sign", "auth_key" }
local KEY_MAX = 511 -- what the server takes (docs/policies.md, the cache hook)

local function check_ttl(v, what)
  if type(v) ~= "number" or not (v >= 0 and v < huge) then
    error(format("cache_rules: %s must be a number of seconds >= 0, got %s", what, tostring(v)), 0)
  end
  return v
end

local function check_bool(v, what)
  if v ~= nil and type(v) ~= "boolean" then
    error(format("cache_rules: %s must be true or false, got %s", what, type(v)), 0)
  end
  return v == true
end

local function list_of(v, what)
  if type(v) ~= "table" then error(format("cache_rules: %s must be a list, got %s", what, type(v)), 0) end
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then
      error(format("cache_rules: %s must be a list, it has the key %s", what, tostring(k)), 0)
    end
  end
  return v
end

local function compile_rules(list)
  local rules = {}
  for i, r in ipairs(list_of(list, "rules")) do
    local what = format("rules[%d]", i)
    if type(r) ~= "table" then error(format("cache_rules: %s must be a table, got %s", what, type(r)), 0) end
    check_keys(r, RULE_KEYS, "cache_rules: " .. what, "setting", " (known: match, prefix, ttl, bypass)")
    if (r.match == nil) == (r.prefix == nil) then
      error(format("cache_rules: %s needs one of match (a Lua pattern) or prefix", what), 0)
    end
    local rule = { bypass = check_bool(r.bypass, what .. ".bypass") }
    if r.ttl ~= nil then rule.ttl = check_ttl(r.ttl, what .. ".ttl") end
    if r.match ~= nil then
      local p = r.match
      local err = type(p) ~= "string" and "not a string" or p == "" and "empty" or acl.check_pattern(p)
      if err then error(format("cache_rules: %s.match = %s: bad Lua pattern: %s", what, tostring(p), err), 0) end
      rule.match = p
    else
      if type(r.prefix) ~= "string" or sub(r.prefix, 1, 1) ~= "/" then
        error(format("cache_rules: %s.prefix must be a path starting with /, got %s", what, tostring(r.prefix)), 0)
      end
      rule.prefix = r.prefix
    end
    rules[i] = rule
  end
  return rules
end

local function compile_errors(t)
  local out = {}
  if type(t) ~= "table" then error("cache_rules: cache_errors must be a table of status = ttl, got " .. type(t), 0) end
  for status, ttl in pairs(t) do
    if type(status) ~= "number" or status % 1 ~= 0 or status < 400 or status > 599 then
      error(format("cache_rules: cache_errors: a status must be an integer from 400 to 599, got %s", tostring(status)), 0)
    end
    out[status] = check_ttl(ttl, format("cache_errors[%d]", status))
  end
  return out
end

-- Bytes a key may not hold (anything but visible ASCII) percent-encoded.
local function pct(c) return format("%%%02X", byte(c)) end

return function(settings)
  if type(settings) ~= "table" then error("cache_rules: settings must be a table", 0) end
  check_keys(settings, KEYS, "cache_rules", "setting",
    " (known: rules, default_ttl, keep_query, strip_args, cache_errors, ignore_origin_no_store)")
  local rules = compile_rules(settings.rules or {})
  local nrules = #rules
  local default_ttl = settings.default_ttl ~= nil and check_ttl(settings.default_ttl, "default_ttl") or nil
  local keep_query = check_bool(settings.keep_query, "keep_query")
  local ignore_no_store = check_bool(settings.ignore_origin_no_store, "ignore_origin_no_store")
  local cache_errors = compile_errors(settings.cache_errors or {})
  local strip = {}
  for i, name in ipairs(list_of(settings.strip_args or STRIP_DEFAULT, "strip_args")) do
    if type(name) ~= "string" or name == "" then
      error(format("cache_rules: strip_args[%d] must be an argument name, got %s", i, tostring(name)), 0)
    end
    strip[name] = true
  end

  local function rule_of(path)
    for i = 1, nrules do
      local r = rules[i]
      if r.prefix then
        if sub(path, 1, #r.prefix) == r.prefix then return r end
      elseif find(path, r.match) then
        return r
      end
    end
    return nil
  end

  -- The query without strip_args, its pieces sorted; "" when nothing is left.
  local function kept_query(q)
    if q == "" then return "" end
    local kept = {}
    for _, piece in ipairs(split(q, "&")) do
      if piece ~= "" then
        local eq = find(piece, "=", 1, true)
        if not strip[unescape(eq and sub(piece, 1, eq - 1) or piece, true)] then kept[#kept + 1] = piece end
      end
    end
    sort(kept)
    return concat(kept, "&")
  end

  local function key_of(req)
    local q = kept_query(req.query)
    local key = q == "" and req.path or req.path .. "?" .. q
    if find(key, "[^\33-\126]") then key = gsub(key, "[^\33-\126]", pct) end
    if #key > KEY_MAX then key = "md5:" .. util.hex(util.md5(key)) end
    return key
  end

  -- no-store or private among the origin's Cache-Control directives.
  local function origin_forbids(cc)
    if cc == nil or ignore_no_store then return false end
    for _, d in ipairs(split(lower(cc), ",")) do
      local name = trim(d)
      local eq = find(name, "=", 1, true)
      if eq then name = trim(sub(name, 1, eq - 1)) end
      if name == "no-store" or name == "private" then return true end
    end
    return false
  end

  return {
    cache = function(req, res)
      local rule = rule_of(req.path)
      if res == nil then
        if rule and rule.bypass then return { bypass = true, keep_query = keep_query or nil } end
        if not keep_query then return nil end
        return { key = key_of(req), keep_query = true }
      end
      if rule and rule.bypass then return { bypass = true } end
      local status, ttl = res.status, rule and rule.ttl or default_ttl
      if status ~= 200 and status ~= 206 then
        ttl = cache_errors[status]
        if ttl == nil then return { cacheable = false } end
      end
      if origin_forbids(res.cache_control) then return { cacheable = false } end
      return { cacheable = true, ttl = ttl }
    end,
  }
end
