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
  local lists_check = acl.checker(lists) -- nil without lists
  local policy = {}
  if check or lists_check then
    policy.access = function(req)
      local ok, status, reason = true, nil, nil
      if check then ok, status, reason = check(req) end
      if ok and lists_check then ok, status, reason = lists_check(req) end
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
