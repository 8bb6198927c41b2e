/* The gateway's frames: decode into mc_frame_t, encode the device's frames (mc_frame.h). */
#include "mc_frame.h"

#include <string.h>

#include "mc_json.h"
#include "mc_ota.h"

typedef struct {
    const char *js;
    const mc_json_tok_t *t;
    int n;
} doc_t;

/* A required (req=1) or optional string field into out; missing optional -> "". */
static int get_str(const doc_t *d, int obj, const char *key, char *out, size_t cap, int req) {
    int i = mc_json_find(d->js, d->t, d->n, obj, key);
    out[0] = '\0';
    if (i < 0) return req ? MC_ERR_FIELD : MC_OK;
    int r = mc_json_str(d->js, d->t, i, out, cap);
    if (r == MC_ERR_NOSPACE) {
        out[0] = '\0';
        return MC_ERR_TOO_BIG;
    }
    return r < 0 ? r : MC_OK;
}

/* An informational string: too long is cut at a character boundary, not refused. */
static int get_text_cut(const doc_t *d, int obj, const char *key, char *out, size_t cap) {
    int i = mc_json_find(d->js, d->t, d->n, obj, key);
    out[0] = '\0';
    if (i < 0) return MC_OK;
    if (d->t[i].type != MC_JSON_STRING) return MC_ERR_FIELD;
    int r = mc_json_str(d->js, d->t, i, out, cap);
    if (r == MC_ERR_NOSPACE) {
        /* keep the raw (escaped) bytes, cut before a partial UTF-8 sequence */
        size_t take = d->t[i].end - d->t[i].start;
        if (take > cap - 1) take = cap - 1;
        memcpy(out, d->js + d->t[i].start, take);
        while (take > 0 && mc_utf8_chars(out, take) < 0) take--;
        out[take] = '\0';
        return MC_OK;
    }
    return r < 0 ? r : MC_OK;
}

static int get_int(const doc_t *d, int obj, const char *key, int64_t *out, int req) {
    int i = mc_json_find(d->js, d->t, d->n, obj, key);
    *out = 0;
    if (i < 0) return req ? MC_ERR_FIELD : MC_OK;
    return mc_json_int(d->js, d->t, i, out);
}

/* Whole seconds of a non-negative number that may have a fraction (the gateway's float TTLs). */
static int get_seconds(const doc_t *d, int obj, const char *key, int64_t *out) {
    int i = mc_json_find(d->js, d->t, d->n, obj, key);
    *out = 0;
    if (i < 0) return MC_OK;
    if (d->t[i].type != MC_JSON_NUMBER) return MC_ERR_FIELD;
    int64_t v = 0;
    for (uint32_t p = d->t[i].start; p < d->t[i].end; p++) {
        char c = d->js[p];
        if (c == '.') break;
        if (c < '0' || c > '9' || v > 1000000000) return MC_ERR_FIELD; /* negative, exponent, huge */
        v = v * 10 + (c - '0');
    }
    *out = v;
    return MC_OK;
}

static int ack_status(const char *s) {
    static const char *const names[] = {"stored", "duplicate", "rejected", "dropped", "unregistered"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) return i;
    }
    return MC_ACK_OTHER;
}

#define TRY(x)              \
    do {                    \
        int r_ = (x);       \
        if (r_ < 0) return r_; \
    } while (0)

int mc_frame_decode(const char *raw, size_t len, mc_frame_t *f) {
    if (raw == NULL || f == NULL) return MC_ERR_ARG;
    memset(f, 0, offsetof(mc_frame_t, manifest));
    f->manifest[0] = f->text[0] = f->cert[0] = f->ca[0] = '\0';
    f->kind = -1;
    if (len > MC_FRAME_IN_MAX) return MC_ERR_TOO_BIG;
    mc_json_tok_t toks[MC_JSON_MAX_TOKENS];
    int n = mc_json_parse(raw, len, toks, MC_JSON_MAX_TOKENS, MC_FRAME_IN_MAX, MC_JSON_MAX_DEPTH);
    if (n < 0) return n;
    if (toks[0].type != MC_JSON_OBJECT) return MC_ERR_FIELD;
    doc_t d = {raw, toks, n};
    int r = get_str(&d, 0, "type", f->type_name, sizeof f->type_name, 1);
    if (r < 0) return r == MC_ERR_TOO_BIG ? MC_ERR_FIELD : r;
    const char *t = f->type_name;
    if (strcmp(t, "pair.code") == 0) {
        f->type = MC_FRAME_PAIR_CODE;
        TRY(get_str(&d, 0, "code", f->code, sizeof f->code, 1));
        TRY(get_str(&d, 0, "secret", f->secret, sizeof f->secret, 1));
        TRY(get_seconds(&d, 0, "expires_in_s", &f->expires_in_s));
    } else if (strcmp(t, "pair.pending") == 0) {
        f->type = MC_FRAME_PAIR_PENDING;
    } else if (strcmp(t, "pair.token") == 0) {
        f->type = MC_FRAME_PAIR_TOKEN;
        TRY(get_str(&d, 0, "token", f->token, sizeof f->token, 1));
        TRY(get_seconds(&d, 0, "expires_in_s", &f->expires_in_s));
    } else if (strcmp(t, "pair.cert") == 0) {
        f->type = MC_FRAME_PAIR_CERT;
        TRY(get_str(&d, 0, "device_id", f->device_id, sizeof f->device_id, 1));
        TRY(get_str(&d, 0, "cert", f->cert, sizeof f->cert, 1));
        TRY(get_str(&d, 0, "ca", f->ca, sizeof f->ca, 0));
    } else if (strcmp(t, "welcome") == 0) {
        f->type = MC_FRAME_WELCOME;
        TRY(get_str(&d, 0, "device_id", f->device_id, sizeof f->device_id, 1));
        TRY(get_int(&d, 0, "last_seq", &f->last_seq, 1));
        TRY(get_int(&d, 0, "protocol", &f->protocol, 0));
        if (f->last_seq < 0) return MC_ERR_FIELD;
    } else if (strcmp(t, "event") == 0) {
        f->type = MC_FRAME_EVENT;
        TRY(get_int(&d, 0, "seq", &f->seq, 1));
        TRY(get_str(&d, 0, "kind", f->event_kind, sizeof f->event_kind, 1));
        int ts = mc_json_find(raw, toks, n, 0, "ts_ms");
        if (ts >= 0) {
            TRY(mc_json_int(raw, toks, ts, &f->ts_ms));
            f->has_ts = 1;
        }
        int body = mc_json_find(raw, toks, n, 0, "body");
        if (body >= 0 && toks[body].type != MC_JSON_OBJECT) return MC_ERR_FIELD;
        if (body >= 0) {
            TRY(get_str(&d, body, "text", f->text, sizeof f->text, strcmp(f->event_kind, "message") == 0));
        } else if (strcmp(f->event_kind, "message") == 0) {
            return MC_ERR_FIELD;
        }
        if (f->seq < 1) return MC_ERR_FIELD;
    } else if (strcmp(t, "ack") == 0) {
        f->type = MC_FRAME_ACK;
        TRY(get_str(&d, 0, "message_id", f->message_id, sizeof f->message_id, 1));
        TRY(get_str(&d, 0, "status", f->status, sizeof f->status, 1));
        TRY(get_text_cut(&d, 0, "detail", f->detail, sizeof f->detail));
        f->ack = ack_status(f->status);
    } else if (strcmp(t, "error") == 0) {
        f->type = MC_FRAME_ERROR;
        TRY(get_str(&d, 0, "code", f->error_code, sizeof f->error_code, 1));
        TRY(get_text_cut(&d, 0, "detail", f->detail, sizeof f->detail));
    } else if (strcmp(t, "ota.offer") == 0 || strcmp(t, "ota.rollback") == 0 || strcmp(t, "ota.ack") == 0) {
        char kind[MC_KIND_CAP];
        TRY(get_str(&d, 0, "kind", kind, sizeof kind, 1));
        f->kind = mc_kind_parse(kind);
        if (f->kind < 0) return MC_ERR_FIELD;
        if (t[4] == 'o') {
            f->type = MC_FRAME_OTA_OFFER;
            int m = mc_json_find(raw, toks, n, 0, "manifest");
            int r2 = mc_json_str(raw, toks, m, f->manifest, sizeof f->manifest);
            if (r2 < 0) return r2 == MC_ERR_NOSPACE ? MC_ERR_TOO_BIG : MC_ERR_FIELD;
            f->manifest_len = (uint32_t)r2;
            char sig[100];
            TRY(get_str(&d, 0, "signature", sig, sizeof sig, 1));
            if (mc_b64_decode(sig, strlen(sig), f->signature, sizeof f->signature) != 64) return MC_ERR_FIELD;
        } else if (t[4] == 'r') {
            f->type = MC_FRAME_OTA_ROLLBACK;
            TRY(get_str(&d, 0, "version", f->version, sizeof f->version, 1));
            TRY(get_text_cut(&d, 0, "reason", f->detail, sizeof f->detail));
        } else {
            f->type = MC_FRAME_OTA_ACK;
            TRY(get_str(&d, 0, "version", f->version, sizeof f->version, 1));
            TRY(get_str(&d, 0, "status", f->status, sizeof f->status, 0));
        }
    } else {
        f->type = MC_FRAME_UNKNOWN;
    }
    return MC_OK;
}

int mc_valid_device_id(const char *s) {
    if (s == NULL) return 0;
    size_t n = strlen(s);
    if (n < 3 || n > 40) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok) return 0;
    }
    return 1;
}

int mc_valid_message_id(const char *s) {
    if (s == NULL) return 0;
    size_t n = strlen(s);
    if (n < 1 || n > 128) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == ':' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int len_between(const char *s, size_t lo, size_t hi) {
    if (s == NULL) return 0;
    size_t n = strlen(s);
    return n >= lo && n <= hi;
}

int mc_enc_pair_begin(char *out, size_t cap, const char *device_id) {
    if (!mc_valid_device_id(device_id)) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "pair.begin");
    mc_jw_key(&w, "device_id");
    mc_jw_str(&w, device_id);
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}

int mc_enc_pair_poll(char *out, size_t cap, const char *code, const char *secret) {
    if (!len_between(code, 4, 16) || !len_between(secret, 16, 128)) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "pair.poll");
    mc_jw_key(&w, "code");
    mc_jw_str(&w, code);
    mc_jw_key(&w, "secret");
    mc_jw_str(&w, secret);
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}

int mc_enc_pair_csr(char *out, size_t cap, const char *token, const char *csr) {
    if (!len_between(token, 16, 128) || !len_between(csr, 64, 3000)) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "pair.csr");
    mc_jw_key(&w, "token");
    mc_jw_str(&w, token);
    mc_jw_key(&w, "csr");
    mc_jw_str(&w, csr);
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}

int mc_enc_hello(char *out, size_t cap, const char *device_id, int64_t last_seen_seq, const char *fw_version,
                 const char *model_version, const char *board, const char *capabilities) {
    if (!mc_valid_device_id(device_id) || last_seen_seq < 0) return MC_ERR_ARG;
    if (fw_version == NULL) fw_version = "";
    if (model_version == NULL) model_version = "";
    if (board == NULL) board = "";
    if (capabilities == NULL) capabilities = "text";
    if (strlen(fw_version) > 64 || strlen(model_version) > 64 || strlen(board) > 64) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "device.hello");
    mc_jw_key(&w, "device_id");
    mc_jw_str(&w, device_id);
    mc_jw_key(&w, "last_seen_seq");
    mc_jw_int(&w, last_seen_seq);
    mc_jw_key(&w, "fw_version");
    mc_jw_str(&w, fw_version);
    mc_jw_key(&w, "model_version");
    mc_jw_str(&w, model_version);
    mc_jw_key(&w, "capabilities");
    mc_jw_arr_open(&w);
    int count = 0;
    const char *p = capabilities;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || n > 32 || ++count > 16) return MC_ERR_ARG;
        mc_jw_strn(&w, p, n);
        p += n;
        if (*p == ',') p++;
    }
    mc_jw_arr_close(&w);
    if (board[0]) {
        mc_jw_key(&w, "board");
        mc_jw_str(&w, board);
    }
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}

int mc_enc_message(char *out, size_t cap, const char *message_id, const char *text, int64_t ts_ms) {
    if (!mc_valid_message_id(message_id) || text == NULL) return MC_ERR_ARG;
    int chars = mc_utf8_chars(text, strlen(text));
    if (chars < 1 || chars > 16384) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "message");
    mc_jw_key(&w, "message_id");
    mc_jw_str(&w, message_id);
    mc_jw_key(&w, "text");
    mc_jw_str(&w, text);
    if (ts_ms >= 0) {
        mc_jw_key(&w, "ts_ms");
        mc_jw_int(&w, ts_ms);
    }
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}

int mc_enc_ota_result(char *out, size_t cap, int kind, const char *version, int ok, const char *reason,
                      int32_t boot_failures) {
    const char *k = mc_kind_name(kind);
    if (k == NULL || !len_between(version, 1, 32)) return MC_ERR_ARG;
    if (reason == NULL) reason = "";
    if (strlen(reason) > 256) return MC_ERR_ARG;
    mc_jw_t w;
    mc_jw_init(&w, out, cap);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "type");
    mc_jw_str(&w, "ota.result");
    mc_jw_key(&w, "kind");
    mc_jw_str(&w, k);
    mc_jw_key(&w, "version");
    mc_jw_str(&w, version);
    mc_jw_key(&w, "ok");
    mc_jw_bool(&w, ok);
    mc_jw_key(&w, "reason");
    mc_jw_str(&w, reason);
    if (boot_failures >= 0) {
        mc_jw_key(&w, "metrics");
        mc_jw_obj_open(&w);
        mc_jw_key(&w, "boot_failures");
        mc_jw_int(&w, boot_failures);
        mc_jw_obj_close(&w);
    }
    mc_jw_obj_close(&w);
    return mc_jw_finish(&w);
}
