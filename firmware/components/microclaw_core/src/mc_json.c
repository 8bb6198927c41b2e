/* Strict bounded JSON reader, compact writer, base64 and UTF-8 helpers (mc_json.h).
 * Iterative (an explicit stack of at most 32 open containers), no allocation. */
#include "mc_json.h"

#include <string.h>

#define STACK_MAX 32

enum { X_VALUE, X_VALUE_OR_END, X_KEY, X_KEY_OR_END, X_COLON, X_COMMA_OR_END, X_DONE };

/* Length of a valid UTF-8 sequence at s[0..avail), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    size_t n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (n == 0 || n > avail) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
    }
    if (n == 3) {
        if (c == 0xE0 && s[1] < 0xA0) return 0;          /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0;         /* surrogates */
    } else if (n == 4) {
        if (c == 0xF0 && s[1] < 0x90) return 0;          /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0;         /* > U+10FFFF */
    }
    return n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static long hex4(const char *p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Scan a string starting at js[pos] == '"'; returns the index of the closing quote or -1. */
static long scan_string(const char *js, size_t len, size_t pos) {
    size_t i = pos + 1;
    while (i < len) {
        unsigned char c = (unsigned char)js[i];
        if (c == '"') return (long)i;
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (i + 1 >= len) return -1;
            char e = js[i + 1];
            if (e == 'u') {
                if (i + 6 > len) return -1;
                long u = hex4(js + i + 2);
                if (u < 0) return -1;
                i += 6;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (i + 6 > len || js[i] != '\\' || js[i + 1] != 'u') return -1;
                    long lo = hex4(js + i + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                    i += 6;
                } else if (u >= 0xDC00 && u <= 0xDFFF) {
                    return -1;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0') return -1;
            i += 2;
            continue;
        }
        size_t n = utf8_seq((const unsigned char *)js + i, len - i);
        if (n == 0) return -1;
        i += n;
    }
    return -1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Scan a number at js[pos]; returns the index after it or -1. */
static long scan_number(const char *js, size_t len, size_t pos) {
    size_t i = pos;
    if (i < len && js[i] == '-') i++;
    if (i >= len) return -1;
    if (js[i] == '0') {
        i++;
    } else if (js[i] >= '1' && js[i] <= '9') {
        while (i < len && is_digit(js[i])) i++;
    } else {
        return -1;
    }
    if (i < len && js[i] == '.') {
        i++;
        if (i >= len || !is_digit(js[i])) return -1;
        while (i < len && is_digit(js[i])) i++;
    }
    if (i < len && (js[i] == 'e' || js[i] == 'E')) {
        i++;
        if (i < len && (js[i] == '+' || js[i] == '-')) i++;
        if (i >= len || !is_digit(js[i])) return -1;
        while (i < len && is_digit(js[i])) i++;
    }
    return (long)i;
}

int mc_json_parse(const char *js, size_t len, mc_json_tok_t *toks, size_t max_tokens, size_t max_bytes,
                  unsigned max_depth) {
    if (js == NULL || toks == NULL || max_tokens == 0) return MC_ERR_ARG;
    if (len > max_bytes || len > 0x7FFFFFFFu) return MC_ERR_TOO_BIG;
    if (max_depth > STACK_MAX) max_depth = STACK_MAX;
    int stack[STACK_MAX];
    int sp = 0;
    size_t ntok = 0;
    int expect = X_VALUE;
    size_t pos = 0;
    for (;;) {
        while (pos < len && (js[pos] == ' ' || js[pos] == '\t' || js[pos] == '\n' || js[pos] == '\r')) pos++;
        if (pos >= len) {
            return (expect == X_DONE) ? (int)ntok : MC_ERR_JSON;
        }
        char c = js[pos];
        int value_done = 0;
        switch (expect) {
        case X_DONE:
            return MC_ERR_JSON;
        case X_COLON:
            if (c != ':') return MC_ERR_JSON;
            pos++;
            expect = X_VALUE;
            continue;
        case X_KEY:
        case X_KEY_OR_END:
            if (c == '}' && expect == X_KEY_OR_END) goto close;
            if (c != '"') return MC_ERR_JSON;
            {
                long end = scan_string(js, len, pos);
                if (end < 0) return MC_ERR_JSON;
                if (ntok >= max_tokens) return MC_ERR_TOO_BIG;
                mc_json_tok_t *t = &toks[ntok];
                t->type = MC_JSON_STRING;
                t->depth = (uint8_t)sp;
                t->count = 0;
                t->start = (uint32_t)(pos + 1);
                t->end = (uint32_t)end;
                ntok++;
                t->next = (uint32_t)ntok;
                pos = (size_t)end + 1;
                expect = X_COLON;
            }
            continue;
        case X_COMMA_OR_END: {
            int parent = stack[sp - 1];
            int is_obj = toks[parent].type == MC_JSON_OBJECT;
            if (c == ',') {
                pos++;
                expect = is_obj ? X_KEY : X_VALUE;
                continue;
            }
            if ((c == '}' && is_obj) || (c == ']' && !is_obj)) goto close;
            return MC_ERR_JSON;
        }
        case X_VALUE:
        case X_VALUE_OR_END:
            if (c == ']' && expect == X_VALUE_OR_END) goto close;
            if (ntok >= max_tokens) return MC_ERR_TOO_BIG;
            {
                mc_json_tok_t *t = &toks[ntok];
                t->depth = (uint8_t)sp;
                t->count = 0;
                t->start = (uint32_t)pos;
                if (c == '{' || c == '[') {
                    if ((unsigned)sp + 1 > max_depth) return MC_ERR_DEPTH;
                    t->type = c == '{' ? MC_JSON_OBJECT : MC_JSON_ARRAY;
                    stack[sp++] = (int)ntok;
                    ntok++;
                    pos++;
                    expect = c == '{' ? X_KEY_OR_END : X_VALUE_OR_END;
                    continue;
                }
                long end;
                if (c == '"') {
                    end = scan_string(js, len, pos);
                    if (end < 0) return MC_ERR_JSON;
                    t->type = MC_JSON_STRING;
                    t->start = (uint32_t)(pos + 1);
                    t->end = (uint32_t)end;
                    pos = (size_t)end + 1;
                } else if (c == '-' || is_digit(c)) {
                    end = scan_number(js, len, pos);
                    if (end < 0) return MC_ERR_JSON;
                    t->type = MC_JSON_NUMBER;
                    t->end = (uint32_t)end;
                    pos = (size_t)end;
                } else if (len - pos >= 4 && memcmp(js + pos, "true", 4) == 0) {
                    t->type = MC_JSON_TRUE;
                    pos += 4;
                    t->end = (uint32_t)pos;
                } else if (len - pos >= 5 && memcmp(js + pos, "false", 5) == 0) {
                    t->type = MC_JSON_FALSE;
                    pos += 5;
                    t->end = (uint32_t)pos;
                } else if (len - pos >= 4 && memcmp(js + pos, "null", 4) == 0) {
                    t->type = MC_JSON_NULL;
                    pos += 4;
                    t->end = (uint32_t)pos;
                } else {
                    return MC_ERR_JSON;
                }
                ntok++;
                t->next = (uint32_t)ntok;
                value_done = 1;
            }
            break;
        default:
            return MC_ERR_JSON;
        }
        if (value_done) {
            if (sp == 0) {
                expect = X_DONE;
            } else {
                toks[stack[sp - 1]].count++;
                expect = X_COMMA_OR_END;
            }
        }
        continue;
    close : {
        int open = stack[--sp];
        toks[open].end = (uint32_t)(pos + 1);
        toks[open].next = (uint32_t)ntok;
        pos++;
        if (sp == 0) {
            expect = X_DONE;
        } else {
            toks[stack[sp - 1]].count++;
            expect = X_COMMA_OR_END;
        }
    }
    }
}

/* Unescape js[start..end) into out; byte length or MC_ERR_NOSPACE. The input was validated. */
static int unescape(const char *js, uint32_t start, uint32_t end, char *out, size_t cap) {
    size_t o = 0;
    uint32_t i = start;
    while (i < end) {
        unsigned long cp;
        char c = js[i];
        if (c != '\\') {
            if (o + 1 >= cap) return MC_ERR_NOSPACE;
            out[o++] = c;
            i++;
            continue;
        }
        char e = js[i + 1];
        i += 2;
        switch (e) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            cp = (unsigned long)hex4(js + i);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned long lo = (unsigned long)hex4(js + i + 2);
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            break;
        default: cp = (unsigned char)e; break;
        }
        if (cp == 0) return MC_ERR_FIELD; /* an embedded NUL cannot live in a C string */
        unsigned char buf[4];
        size_t n;
        if (cp < 0x80) {
            buf[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            buf[0] = (unsigned char)(0xC0 | (cp >> 6));
            buf[1] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            buf[0] = (unsigned char)(0xE0 | (cp >> 12));
            buf[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            buf[2] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            buf[0] = (unsigned char)(0xF0 | (cp >> 18));
            buf[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            buf[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            buf[3] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 4;
        }
        if (o + n >= cap) return MC_ERR_NOSPACE;
        memcpy(out + o, buf, n);
        o += n;
    }
    if (cap == 0) return MC_ERR_NOSPACE;
    out[o] = '\0';
    return (int)o;
}

int mc_json_str(const char *js, const mc_json_tok_t *toks, int i, char *out, size_t cap) {
    if (i < 0 || toks[i].type != MC_JSON_STRING) return MC_ERR_FIELD;
    return unescape(js, toks[i].start, toks[i].end, out, cap);
}

int mc_json_find(const char *js, const mc_json_tok_t *toks, int ntok, int obj, const char *key) {
    if (obj < 0 || obj >= ntok || toks[obj].type != MC_JSON_OBJECT) return -1;
    size_t klen = strlen(key);
    int i = obj + 1;
    for (unsigned m = 0; m < toks[obj].count && i + 1 < ntok; m++) {
        const mc_json_tok_t *k = &toks[i];
        int match = 0;
        if (memchr(js + k->start, '\\', k->end - k->start) == NULL) {
            match = (k->end - k->start) == klen && memcmp(js + k->start, key, klen) == 0;
        } else {
            char tmp[64];
            int n = unescape(js, k->start, k->end, tmp, sizeof tmp);
            match = n >= 0 && (size_t)n == klen && memcmp(tmp, key, klen) == 0;
        }
        if (match) return i + 1;
        i = (int)toks[i + 1].next;
    }
    return -1;
}

int mc_json_int(const char *js, const mc_json_tok_t *toks, int i, int64_t *out) {
    if (i < 0 || toks[i].type != MC_JSON_NUMBER) return MC_ERR_FIELD;
    uint32_t p = toks[i].start, end = toks[i].end;
    int neg = 0;
    if (js[p] == '-') {
        neg = 1;
        p++;
    }
    uint64_t v = 0;
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        char c = js[p];
        if (!is_digit(c)) return MC_ERR_FIELD; /* fraction or exponent */
        unsigned d = (unsigned)(c - '0');
        if (v > (limit - d) / 10u) return MC_ERR_FIELD;
        v = v * 10u + d;
    }
    if (neg) {
        *out = v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v;
    } else {
        *out = (int64_t)v;
    }
    return MC_OK;
}

/* --- writer ---------------------------------------------------------------------------- */

static void put(mc_jw_t *w, const char *s, size_t n) {
    if (w->err) return;
    if (w->len + n + 1 > w->cap) {
        w->err = MC_ERR_NOSPACE;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void sep(mc_jw_t *w) {
    /* depth counts open containers; first[] bit 1 = nothing written, 2 = a key was just written */
    if (w->depth == 0) return;
    uint8_t *f = &w->first[w->depth - 1];
    if (*f & 2) {
        *f = 0;
        return;
    }
    if (!(*f & 1)) put(w, ",", 1);
    *f = 0;
}

void mc_jw_init(mc_jw_t *w, char *buf, size_t cap) {
    memset(w, 0, sizeof *w);
    w->buf = buf;
    w->cap = cap;
    if (buf == NULL || cap == 0) w->err = MC_ERR_NOSPACE;
}

static void open_c(mc_jw_t *w, const char *c) {
    sep(w);
    if (w->depth >= sizeof w->first) {
        w->err = MC_ERR_DEPTH;
        return;
    }
    put(w, c, 1);
    w->first[w->depth++] = 1;
}

static void close_c(mc_jw_t *w, const char *c) {
    if (w->depth == 0) {
        w->err = MC_ERR_STATE;
        return;
    }
    w->depth--;
    put(w, c, 1);
}

void mc_jw_obj_open(mc_jw_t *w) { open_c(w, "{"); }
void mc_jw_obj_close(mc_jw_t *w) { close_c(w, "}"); }
void mc_jw_arr_open(mc_jw_t *w) { open_c(w, "["); }
void mc_jw_arr_close(mc_jw_t *w) { close_c(w, "]"); }

static void raw_str(mc_jw_t *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put(w, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            put(w, s + i - run, run);
            run = 0;
            put(w, esc, strlen(esc));
        } else {
            run++;
        }
    }
    put(w, s + n - run, run);
    put(w, "\"", 1);
}

void mc_jw_key(mc_jw_t *w, const char *key) {
    sep(w);
    raw_str(w, key, strlen(key));
    put(w, ":", 1);
    if (w->depth > 0) w->first[w->depth - 1] = 2;
}

void mc_jw_strn(mc_jw_t *w, const char *s, size_t n) {
    if (mc_utf8_chars(s, n) < 0) {
        if (!w->err) w->err = MC_ERR_ARG;
        return;
    }
    sep(w);
    raw_str(w, s, n);
}

void mc_jw_str(mc_jw_t *w, const char *s) { mc_jw_strn(w, s, strlen(s)); }

void mc_jw_int(mc_jw_t *w, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u);
    if (v < 0) tmp[sizeof tmp - 1 - n++] = '-';
    sep(w);
    put(w, tmp + sizeof tmp - n, (size_t)n);
}

void mc_jw_bool(mc_jw_t *w, int v) {
    sep(w);
    if (v) {
        put(w, "true", 4);
    } else {
        put(w, "false", 5);
    }
}

int mc_jw_finish(mc_jw_t *w) {
    if (w->err) return w->err;
    if (w->depth != 0) return MC_ERR_STATE;
    w->buf[w->len] = '\0';
    return (int)w->len;
}

/* --- base64, UTF-8 ------------------------------------------------------------------- */

static int b64v(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int mc_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap) {
    if (len % 4 != 0) return MC_ERR_ARG;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad) return MC_ERR_ARG;
                v[k] = b64v(c);
                if (v[k] < 0) return MC_ERR_ARG;
            }
        }
        uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3u - (size_t)pad;
        if (o + n > cap) return MC_ERR_NOSPACE;
        out[o++] = (uint8_t)(q >> 16);
        if (n > 1) out[o++] = (uint8_t)(q >> 8);
        if (n > 2) out[o++] = (uint8_t)q;
    }
    return (int)o;
}

int mc_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (len + 2) / 3 * 4;
    if (need + 1 > cap) return MC_ERR_NOSPACE;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t q = (uint32_t)in[i] << 16;
        if (i + 1 < len) q |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) q |= in[i + 2];
        out[o++] = a[q >> 18 & 63];
        out[o++] = a[q >> 12 & 63];
        out[o++] = i + 1 < len ? a[q >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? a[q & 63] : '=';
    }
    out[o] = '\0';
    return (int)o;
}

int mc_utf8_chars(const char *s, size_t len) {
    size_t i = 0;
    int n = 0;
    while (i < len) {
        size_t k = utf8_seq((const unsigned char *)s + i, len - i);
        if (k == 0 || (k == 1 && s[i] == '\0')) return MC_ERR_JSON;
        i += k;
        n++;
    }
    return n;
}
