-- flvedge.budget: the running hook call's budget (lua_budget), as the library pays it. The count
-- hook only sees VM instructions of interpreted code, so the library's compiled loops and the C
-- work they start (hashing, copying, pattern matching) pay here instead: one unit per byte or item
-- they walk. In the server boot.lua binds this module to the C meter (fe_lua_meter) before any
-- other module is loaded; in busted nothing is bound, paying costs nothing and the pattern
-- functions are string's own. Not for policies.
local _M = {}

_M.find, _M.match, _M.gmatch, _M.gsub = string.find, string.match, string.gmatch, string.gsub

-- Pays n units; raises the budget error when the call has none left.
function _M.charge(n) end

-- The trip's error when this call tripped (budget or memory), else nil.
function _M.tripped() return nil end

-- native: what C passed to boot.load (the meter's address and the paying pattern functions).
function _M.bind(native)
  local ffi = require "ffi"
  pcall(ffi.cdef, [[
typedef struct fe_lua_meter {
  int64_t left;
  int32_t tripped;
  int32_t active;
  char msg[200];
} fe_lua_meter;
]])
  local M = ffi.cast("fe_lua_meter *", native.meter)
  local ffi_string, ffi_copy, min, error = ffi.string, ffi.copy, math.min, error

  local function exceeded()
    if M.tripped == 0 then
      local info = debug.getinfo(4, "Sl") -- who called the library function that paid
      local where = info and info.currentline > 0 and (info.short_src .. ":" .. info.currentline .. ": ") or ""
      local msg = where .. "instruction budget exceeded in the flvedge library (lua_budget)"
      local n = min(#msg, 199)
      ffi_copy(M.msg, msg, n)
      M.msg[n] = 0
      M.tripped = 1
    end
    error(ffi_string(M.msg), 0)
  end

  function _M.charge(n)
    local left = M.left - n
    M.left = left
    if left < 0 and M.active ~= 0 then exceeded() end
  end

  function _M.tripped()
    if M.tripped == 0 then return nil end
    return ffi_string(M.msg)
  end

  _M.find, _M.match, _M.gmatch, _M.gsub = native.find, native.match, native.gmatch, native.gsub
end

return _M
