-- access_control: the four access lists of flvedge.acl. settings (each list optional, at least
-- one):
--   { ip = { policy = "deny", values = { "10.0.0.0/8", "2001:db8::/32" } },
--     referer = { policy = "deny", values = { "example.com", "*.example.com" }, empty = "deny" },
--     user_agent = { policy = "allow", values = { "~*bot", "" } },
--     country = { policy = "allow", values = { "KP" } } }
-- policy "allow" blocks the listed values; "deny" admits only them. Lists run cheapest first
-- (ip, referer, user_agent, country: the country lookup is the costly one); the first that
-- refuses answers 403.
local acl = require "flvedge.acl"
local util = require "flvedge.util"

local type, error, next = type, error, next
local deny_body = util.deny_body

return function(settings)
  if type(settings) ~= "table" or next(settings) == nil then
    error("access_control: settings need at least one of ip, referer, user_agent, country", 0)
  end
  local check = acl.checker(acl.compile(settings, "access_control"))
  if not check then return { access = function() return nil end } end -- every list disabled
  return {
    access = function(req)
      local ok, status, reason = check(req)
      if not ok then return status, deny_body(status, reason) end
      return nil
    end,
  }
end
