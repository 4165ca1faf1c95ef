/*
 * fe_lua_pattern: string.find, match, gmatch and gsub for operator code, with Lua 5.1's pattern
 * semantics (as LuaJIT has them) and every matcher step paid from the running call's budget, so
 * that a pattern that backtracks for ever fails with the budget error instead of holding the event
 * loop inside C, where the count hook never runs.
 */
#ifndef FE_LUA_PATTERN_H
#define FE_LUA_PATTERN_H

#include <lua.h>

#include "lua/fe_lua.h"

/** Pushes a table { find, match, gmatch, gsub } whose functions pay from meter (owned by the caller,
 * which outlives the state). */
void fe_lua_pattern_push(lua_State *L, fe_lua_meter *meter);

/** Marks the budget spent (once: a memory trip stays a memory trip) and raises the trip's error,
 * naming the Lua caller and `what`. Never returns. */
int fe_lua_meter_fail(lua_State *L, fe_lua_meter *meter, const char *what);

#endif
