/*
 * fe_lua_ffi: the loops of the policy library in C, for lua/flvedge/ modules through the FFI. A Lua
 * loop on the request path (query parsing, base64, a compare, a list walk) is where LuaJIT's traces
 * abort ("inner loop in root trace", "leaving loop") and, after a few aborts, get blacklisted, so
 * that the whole hook then runs interpreted, by luck of the run and the build
 * (docs/policy-performance.md). FFI calls compile; so the loops are here, and the Lua around them
 * is straight-line code.
 *
 * Every function is pure: it reads its arguments, writes only into buffers the caller owns and
 * sized as stated, never allocates, never raises, and works in time linear in its inputs (the
 * caller pays that from the hook's budget). Built into the server and, for the busted specs, as a
 * shared library (libfe_lua_ffi.so).
 */
#ifndef FE_LUA_FFI_H
#define FE_LUA_FFI_H

#include <stddef.h>
#include <stdint.h>

/**
 * Decodes base64url (RFC 4648 section 5), with or without `=` padding, into out (at least
 * 3 * (n / 4) + 3 bytes). Returns the length, or -1 for anything else: a byte outside the URL
 * alphabet, wrong padding, a length no encoder makes, unused low bits that are not zero.
 */
int fe_lua_ffi_b64url_decode(const char *s, size_t n, unsigned char *out);

/** Encodes n bytes as base64url into out (at least 4 * ((n + 2) / 3) bytes); `=` padding when pad
 * is non-zero. Returns the length written. */
size_t fe_lua_ffi_b64url_encode(const unsigned char *raw, size_t n, int pad, char *out);

/** 1 when a equals b, else 0, in time that depends only on lb: pass the secret-derived value as b. */
int fe_lua_ffi_ct_equal(const void *a, size_t la, const void *b, size_t lb);

/** 1 when s[0..n) is 1 to 15 decimal digits (a token's expires), else 0. */
int fe_lua_ffi_digits(const char *s, size_t n);

/** 1 when s[0..n) is empty or only whitespace (space, \t, \n, \v, \f, \r), else 0. */
int fe_lua_ffi_blank(const char *s, size_t n);

/** The length of path's directory, up to its last `/`, when a name follows that `/` ("/a/b.flv": 3);
 * -1 when it does not ("/a/", "a.flv"). */
int fe_lua_ffi_dir_len(const char *path, size_t n);

/**
 * The value of query argument `name` (compared after percent-decoding, `+` a space) in q, the
 * last one when it repeats, percent-decoded into out (at least qlen bytes). Returns its length,
 * or -1 when q has no such argument. Empty pieces and pieces with an empty name are skipped; a
 * piece without `=` has the value "".
 */
int fe_lua_ffi_query_arg(const char *q, size_t qlen, const char *name, size_t nlen, char *out);

/**
 * Parses an IPv4 or IPv6 address (an IPv6 zone id, `%eth0`, is ignored) into four 32-bit words of
 * its IPv6 form, IPv4 mapped to ::ffff:a.b.c.d. Returns 4 (IPv4), 6 (IPv6) or 0 (not an address).
 */
int fe_lua_ffi_ip_parse(const char *s, size_t n, uint32_t w[4]);

/**
 * 1 when the address s is inside any of n networks, else 0 (also when s is no address). nets
 * holds 8 words per network: its four address words (host bits cleared), then its four mask words.
 */
int fe_lua_ffi_ip_in(const uint32_t *nets, int n, const char *s, size_t len);

/**
 * The host of a Referer into out (cap bytes): the scheme (when it looks like one) and userinfo and
 * port dropped, lowercase, a trailing dot dropped; "[v6]" kept with its brackets. Returns its
 * length (0: none), or -1 when it is longer than cap.
 */
int fe_lua_ffi_referer_host(const char *ref, size_t len, char *out, size_t cap);

/**
 * 1 when a suffix of host that starts at one of its dots (".b.c" and ".c" of "a.b.c") is one of
 * the entries of set, else 0. set is the entries with a `\n` before and after each:
 * "\n.example.com\n.example.org\n".
 */
int fe_lua_ffi_suffix_in(const char *host, size_t len, const char *set, size_t setlen);

/**
 * 1 when one of the literal strings of set occurs in s, else 0. set is the strings, each after
 * one byte with its length (1 to 255); with ci non-zero s is compared as if lowercase (the set's
 * strings must be lowercase already).
 */
int fe_lua_ffi_find_any(const char *s, size_t len, const char *set, size_t setlen, int ci);

#endif
