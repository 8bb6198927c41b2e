/* A strict, bounded JSON reader and a small writer (no allocation, no recursion).
 *
 * mc_json_parse validates the whole input (RFC 8259 grammar, UTF-8, escapes, no trailing
 * bytes) and fills a caller-provided token array, refusing input longer than max_bytes,
 * nested deeper than max_depth or needing more than max_tokens tokens. Tokens point into the
 * input; strings are unescaped on request with mc_json_str. The writer emits compact JSON
 * (the bytes Python's json.dumps(..., separators=(",", ":"), ensure_ascii=False) makes). */
#ifndef MC_JSON_H
#define MC_JSON_H

#include "mc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MC_JSON_OBJECT = 1,
    MC_JSON_ARRAY = 2,
    MC_JSON_STRING = 3,  /* start/end exclude the quotes */
    MC_JSON_NUMBER = 4,
    MC_JSON_TRUE = 5,
    MC_JSON_FALSE = 6,
    MC_JSON_NULL = 7
} mc_json_type_t;

typedef struct {
    uint8_t type;    /* mc_json_type_t */
    uint8_t depth;   /* 0 for the top value */
    uint16_t count;  /* members (object) or elements (array) */
    uint32_t start;  /* byte offsets into the input */
    uint32_t end;
    uint32_t next;   /* index of the token after this value and all its children */
} mc_json_tok_t;

/* Number of tokens (>= 1) or MC_ERR_JSON / MC_ERR_DEPTH / MC_ERR_TOO_BIG. */
int mc_json_parse(const char *js, size_t len, mc_json_tok_t *toks, size_t max_tokens,
                  size_t max_bytes, unsigned max_depth);

/* Index of the value of `key` in object token `obj`, or -1. */
int mc_json_find(const char *js, const mc_json_tok_t *toks, int ntok, int obj, const char *key);

/* Unescape string token `i` into out (NUL-terminated); its byte length, MC_ERR_FIELD if not a
 * string, MC_ERR_NOSPACE if it does not fit. */
int mc_json_str(const char *js, const mc_json_tok_t *toks, int i, char *out, size_t cap);

/* An integer token (no fraction or exponent, fits int64) into *out; MC_ERR_FIELD otherwise. */
int mc_json_int(const char *js, const mc_json_tok_t *toks, int i, int64_t *out);

/* Writer. Begin with mc_jw_init; every call after a failure is a no-op; mc_jw_finish
 * NUL-terminates and returns the length or the first error. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    int err;
    uint8_t depth;
    uint8_t first[8]; /* per open container: no member written yet */
} mc_jw_t;

void mc_jw_init(mc_jw_t *w, char *buf, size_t cap);
void mc_jw_obj_open(mc_jw_t *w);
void mc_jw_obj_close(mc_jw_t *w);
void mc_jw_arr_open(mc_jw_t *w);
void mc_jw_arr_close(mc_jw_t *w);
void mc_jw_key(mc_jw_t *w, const char *key);
void mc_jw_str(mc_jw_t *w, const char *s);        /* NUL-terminated UTF-8 */
void mc_jw_strn(mc_jw_t *w, const char *s, size_t n);
void mc_jw_int(mc_jw_t *w, int64_t v);
void mc_jw_bool(mc_jw_t *w, int v);
int mc_jw_finish(mc_jw_t *w);

/* Base64 (standard alphabet, padded). decode: bytes written or MC_ERR_ARG / MC_ERR_NOSPACE. */
int mc_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);
int mc_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/* Number of Unicode code points in valid UTF-8, or MC_ERR_JSON for invalid UTF-8. */
int mc_utf8_chars(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
