#!/usr/bin/env bash
# The busted specs of lua/ and policies/ under LuaJIT (ctest: lua.busted). Debian's
# /usr/bin/busted starts under plain Lua; running that script with luajit loads busted from
# /usr/share/lua/5.1 instead, and --ignore-lua stops the .busted `lua` setting re-running it.
# LUAJIT=/path/to/luajit picks another interpreter. Extra arguments go to busted. flvedge.util
# loads the library's C side from FLVEDGE_FFI_LIB (ctest sets it), else build/libfe_lua_ffi.so.
set -euo pipefail
cd "$(dirname "$0")/../.."
luajit=${LUAJIT:-$(command -v luajit || true)}
busted=$(command -v busted || true)
[ -n "$luajit" ] || { echo "run_busted.sh: luajit not found (apt-get install luajit)" >&2; exit 1; }
[ -n "$busted" ] || { echo "run_busted.sh: busted not found (apt-get install lua-busted)" >&2; exit 1; }
echo "run_busted.sh: interpreter: $luajit ($("$luajit" -v 2>&1 | head -n 1))"
exec "$luajit" "$busted" --ignore-lua -o plainTerminal "$@"
