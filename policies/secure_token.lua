-- secure_token: admits a request only with a valid signed URL (flvedge.token). settings:
--   { secret = "s3cret", type = "md5" | "nginx" | "hmac", ip = false, expiry = "gcore" | "nginx",
--     md5_arg = "md5", token_arg = "token", expires_arg = "expires", secret_template = "..." }
-- Denies with 403 (missing or invalid token) or 410 (valid but expired). Checked once per
-- request: an open live stream is never cut when its token expires.
local token = require "flvedge.token"
local util = require "flvedge.util"

local type, pcall, error = type, pcall, error
local deny_body = util.deny_body

return function(settings)
  if type(settings) ~= "table" then error("secure_token: settings must be a table", 0) end
  local ok, check = pcall(token.checker, settings)
  if not ok then error("secure_token: " .. check, 0) end
  return {
    access = function(req)
      local passed, status, reason = check(req)
      if passed then return nil end
      return status, deny_body(status, reason)
    end,
  }
end
