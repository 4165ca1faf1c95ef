-- chain: a signed URL, then access lists, then origin selection, in one policy. settings (each
-- part optional, at least one):
--   { token = { ... secure_token's settings ... },
--     acl = { ip = {...}, referer = {...}, user_agent = {...}, country = {...} },
--     origin = { ... origin_failover's settings ... } }
-- The token is checked first, then the lists cheapest first (ip, referer, user_agent, country);
-- the first refusal answers.
local token = require "flvedge.token"
local acl = require "flvedge.acl"
local util = require "flvedge.util"

local type, error, pcall, tostring, require = type, error, pcall, tostring, require
local deny_body = util.deny_body

local KEYS = { token = true, acl = true, origin = true }

return function(settings)
  if type(settings) ~= "table" then error("chain: settings must be a table", 0) end
  util.check_keys(settings, KEYS, "chain", "part", " (known: token, acl, origin)")
  if settings.token == nil and settings.acl == nil and settings.origin == nil then
    error("chain: settings need at least one of token, acl, origin", 0)
  end

  local check -- the token check, or nil
  if settings.token ~= nil then
    local ok, fn = pcall(token.checker, settings.token)
    if not ok then error("chain: " .. tostring(fn), 0) end
    check = fn
  end
  local lists = settings.acl ~= nil and acl.compile(settings.acl, "chain: acl") or {}
  -- The checks as one function that calls each in turn, made of closures rather than a loop over
  -- a list: a loop here is where LuaJIT's trace of the hook stopped ("loop unroll limit"), so that
  -- part of the chain ran interpreted from one run to the next (docs/policy-performance.md).
  local all = nil -- check(req) -> true | nil, status, reason
  for i = #lists, 1, -1 do
    local list, rest = lists[i], all
    if rest then
      all = function(req)
        local ok, status, reason = list:check(req)
        if not ok then return ok, status, reason end
        local ok, status, reason = rest(req); return ok, status, reason
      end
    else
      all = function(req) local ok, status, reason = list:check(req); return ok, status, reason end
    end
  end
  if check and all then
    local token_check, lists_check = check, all
    all = function(req)
      local ok, status, reason = token_check(req)
      if not ok then return ok, status, reason end
      local ok, status, reason = lists_check(req); return ok, status, reason
    end
  elseif check then
    all = check
  end
  local policy = {}
  if all then
    policy.access = function(req)
      local ok, status, reason = all(req)
      if not ok then return status, deny_body(status, reason) end
      return nil
    end
  end
  if settings.origin ~= nil then
    local ok, p = pcall(require("origin_failover"), settings.origin)
    if not ok then error("chain: " .. tostring(p), 0) end
    policy.origin = p.origin
  end
  return policy
end
