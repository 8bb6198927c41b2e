/* Signed manifests (Ed25519, Monocypher) and the streamed install into the inactive slot (mc_ota.h). */
#include "mc_ota.h"

#include "mc_internal.h"
#include "mc_json.h"
#include "monocypher-ed25519.h"

int mc_version_parse(const char *s, uint32_t out[3]) {
    if (s == NULL) return MC_ERR_VERSION;
    for (int part = 0; part < 3; part++) {
        uint32_t v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (++digits > 5) return MC_ERR_VERSION;
            v = v * 10u + (uint32_t)(*s++ - '0');
        }
        if (digits == 0) return MC_ERR_VERSION;
        out[part] = v;
        if (part < 2 && *s++ != '.') return MC_ERR_VERSION;
    }
    return *s == '\0' ? MC_OK : MC_ERR_VERSION;
}

int mc_version_cmp(const char *a, const char *b) {
    uint32_t va[3], vb[3];
    int oka = mc_version_parse(a, va) == MC_OK, okb = mc_version_parse(b, vb) == MC_OK;
    if (!oka || !okb) return oka - okb;
    for (int i = 0; i < 3; i++) {
        if (va[i] != vb[i]) return va[i] < vb[i] ? -1 : 1;
    }
    return 0;
}

const char *mc_kind_name(int kind) {
    return kind == MC_KIND_FIRMWARE ? "firmware" : kind == MC_KIND_MODEL ? "model" : NULL;
}

int mc_kind_parse(const char *name) {
    if (name == NULL) return -1;
    if (strcmp(name, "firmware") == 0) return MC_KIND_FIRMWARE;
    if (strcmp(name, "model") == 0) return MC_KIND_MODEL;
    return -1;
}

static int hex_digest(const char *hex, uint8_t out[32]) {
    if (strlen(hex) != 64) return MC_ERR_FIELD;
    for (int i = 0; i < 64; i++) {
        char c = hex[i];
        int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (v < 0) return MC_ERR_FIELD;
        if (i % 2 == 0) {
            out[i / 2] = (uint8_t)(v << 4);
        } else {
            out[i / 2] |= (uint8_t)v;
        }
    }
    return MC_OK;
}

int mc_manifest_verify(const char *raw, size_t len, const uint8_t sig[64], const uint8_t pubkey[32],
                       mc_manifest_t *out) {
    if (raw == NULL || sig == NULL || pubkey == NULL || out == NULL) return MC_ERR_ARG;
    memset(out, 0, sizeof *out);
    if (len >= MC_MANIFEST_CAP) return MC_ERR_TOO_BIG;
    if (crypto_ed25519_check(sig, pubkey, (const uint8_t *)raw, len) != 0) return MC_ERR_SIGNATURE;
    mc_json_tok_t toks[20];
    int n = mc_json_parse(raw, len, toks, 20, MC_MANIFEST_CAP, 1);
    if (n < 0) return n == MC_ERR_TOO_BIG || n == MC_ERR_DEPTH ? MC_ERR_FIELD : n;
    if (toks[0].type != MC_JSON_OBJECT || toks[0].count != 7) return MC_ERR_FIELD;
    char kind[MC_KIND_CAP];
    struct {
        const char *key;
        char *dst;
        size_t cap;
    } strs[] = {{"board", out->board, sizeof out->board},
                {"kind", kind, sizeof kind},
                {"min_version", out->min_version, sizeof out->min_version},
                {"sha256", out->sha256_hex, sizeof out->sha256_hex},
                {"url", out->url, sizeof out->url},
                {"version", out->version, sizeof out->version}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        int at = mc_json_find(raw, toks, n, 0, strs[i].key);
        if (mc_json_str(raw, toks, at, strs[i].dst, strs[i].cap) < 0) return MC_ERR_FIELD;
    }
    int64_t size = 0;
    if (mc_json_int(raw, toks, mc_json_find(raw, toks, n, 0, "size"), &size) < 0 || size <= 0 ||
        size > 0x7FFFFFFF) {
        return MC_ERR_FIELD;
    }
    out->size = (uint32_t)size;
    out->kind = mc_kind_parse(kind);
    uint32_t v[3];
    if (out->kind < 0 || mc_version_parse(out->version, v) < 0 || mc_version_parse(out->min_version, v) < 0 ||
        hex_digest(out->sha256_hex, out->sha256) < 0) {
        return MC_ERR_FIELD;
    }
    /* canonical form: keys sorted, no spaces (what microclaw.gateway.ota.canonical makes) */
    char again[MC_MANIFEST_CAP];
    mc_jw_t w;
    mc_jw_init(&w, again, sizeof again);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "board");
    mc_jw_str(&w, out->board);
    mc_jw_key(&w, "kind");
    mc_jw_str(&w, kind);
    mc_jw_key(&w, "min_version");
    mc_jw_str(&w, out->min_version);
    mc_jw_key(&w, "sha256");
    mc_jw_str(&w, out->sha256_hex);
    mc_jw_key(&w, "size");
    mc_jw_int(&w, size);
    mc_jw_key(&w, "url");
    mc_jw_str(&w, out->url);
    mc_jw_key(&w, "version");
    mc_jw_str(&w, out->version);
    mc_jw_obj_close(&w);
    int m = mc_jw_finish(&w);
    if (m < 0 || (size_t)m != len || memcmp(again, raw, len) != 0) {
        memset(out, 0, sizeof *out);
        return MC_ERR_CANONICAL;
    }
    return MC_OK;
}

int mc_ota_check(const mc_manifest_t *m, const char *board, const char *running, uint32_t max_size) {
    if (m == NULL || board == NULL || running == NULL) return MC_ERR_ARG;
    if (strcmp(m->board, board) != 0) return MC_ERR_BOARD;
    uint32_t v[3];
    if (mc_version_parse(running, v) < 0) return MC_ERR_VERSION;
    if (mc_version_cmp(m->version, running) <= 0) return MC_ERR_VERSION;
    if (mc_version_cmp(running, m->min_version) < 0) return MC_ERR_VERSION;
    if (max_size != 0 && m->size > max_size) return MC_ERR_SIZE;
    return MC_OK;
}

int mc_ota_begin(mc_ota_t *o, const mc_hal_t *hal, mc_slots_t *slots, const mc_manifest_t *m) {
    if (o == NULL || hal == NULL || slots == NULL || m == NULL || m->kind != slots->kind) return MC_ERR_ARG;
    if (o->state == MC_OTA_WRITING) return MC_ERR_STATE;
    if (slots->pending != MC_SLOT_NONE) return MC_ERR_STATE; /* a staged image is waiting for its test */
    memset(o, 0, sizeof *o);
    o->m = *m;
    o->slot = mc_slots_inactive(slots);
    if (hal->part_begin(hal->ctx, m->kind, o->slot, m->size) < 0) {
        o->state = MC_OTA_FAILED;
        o->last_error = MC_ERR_IO;
        return MC_ERR_IO;
    }
    mc_sha256_init(&o->sha);
    o->state = MC_OTA_WRITING;
    return MC_OK;
}

static int fail(mc_ota_t *o, int err) {
    o->state = MC_OTA_FAILED;
    o->last_error = err;
    return err;
}

int mc_ota_write(mc_ota_t *o, const mc_hal_t *hal, const uint8_t *data, size_t len) {
    if (o == NULL || hal == NULL || (data == NULL && len)) return MC_ERR_ARG;
    if (o->state != MC_OTA_WRITING) return MC_ERR_STATE;
    if (len > o->m.size - o->written) return fail(o, MC_ERR_SIZE);
    if (hal->part_write(hal->ctx, o->m.kind, o->slot, data, len) < 0) return fail(o, MC_ERR_IO);
    mc_sha256_update(&o->sha, data, len);
    o->written += (uint32_t)len;
    return MC_OK;
}

int mc_ota_finish(mc_ota_t *o, const mc_hal_t *hal, mc_slots_t *slots) {
    if (o == NULL || hal == NULL || slots == NULL) return MC_ERR_ARG;
    if (o->state != MC_OTA_WRITING) return MC_ERR_STATE;
    if (o->written != o->m.size) return fail(o, MC_ERR_SIZE);
    uint8_t digest[32];
    mc_sha256_final(&o->sha, digest);
    if (crypto_verify32(digest, o->m.sha256) != 0) return fail(o, MC_ERR_HASH);
    if (hal->part_finish(hal->ctx, o->m.kind, o->slot) < 0) return fail(o, MC_ERR_IO);
    int rc = mc_slots_stage(slots, hal, o->slot, o->m.version);
    if (rc < 0) return fail(o, rc);
    o->state = MC_OTA_STAGED;
    return MC_OK;
}

int mc_ota_progress(const mc_ota_t *o) {
    if (o->m.size == 0) return 0;
    return (int)((uint64_t)o->written * 100u / o->m.size);
}

void mc_ota_abort(mc_ota_t *o) {
    if (o->state == MC_OTA_WRITING) fail(o, MC_ERR_STATE);
}
