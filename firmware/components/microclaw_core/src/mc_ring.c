/* The persisted offline queue (mc_ring.h). */
#include "mc_ring.h"

#include "mc_internal.h"
#include "mc_json.h"

#define HDR_KEY "rq_hdr"
#define HDR_MAGIC 0x31515243u /* "CRQ1" */
#define HDR_LEN 20
#define ID_CAP 24
#define SLOT_HEAD 7 /* n u32, id length u8, text length u16 */

static void slot_key(char key[8], uint32_t slot) {
    key[0] = 'r';
    key[1] = 'q';
    key[2] = '_';
    key[3] = (char)('0' + slot / 10);
    key[4] = (char)('0' + slot % 10);
    key[5] = '\0';
}

static int is_live(const mc_ring_t *r, uint32_t n) {
    uint32_t s = n % r->slots;
    return (r->live[s / 32] >> (s % 32)) & 1u;
}

static void set_live(mc_ring_t *r, uint32_t n, int on) {
    uint32_t s = n % r->slots;
    if (on) {
        r->live[s / 32] |= 1u << (s % 32);
    } else {
        r->live[s / 32] &= ~(1u << (s % 32));
    }
}

static int save_header(const mc_ring_t *r, const mc_hal_t *hal) {
    uint8_t b[HDR_LEN];
    mc_put_u32(b, HDR_MAGIC);
    mc_put_u32(b + 4, r->slots);
    mc_put_u32(b + 8, r->first);
    mc_put_u32(b + 12, r->next);
    mc_put_u32(b + 16, r->dropped);
    return hal->storage_set(hal->ctx, HDR_KEY, b, sizeof b) < 0 ? MC_ERR_IO : MC_OK;
}

static void skip_holes(mc_ring_t *r) {
    while (r->first != r->next && !is_live(r, r->first)) r->first++;
}

size_t mc_ring_slot_bytes(void) { return SLOT_HEAD + ID_CAP + (MC_MSG_TEXT_CAP - 1); }

/* Read item n's slot: MC_OK and its parts, MC_ERR_NOT_FOUND (acked), MC_ERR_CORRUPT (another n). */
static int read_slot(const mc_ring_t *r, const mc_hal_t *hal, uint32_t n, char *id, size_t id_cap, char *text,
                     size_t text_cap) {
    uint8_t buf[SLOT_HEAD + ID_CAP + MC_MSG_TEXT_CAP];
    char key[8];
    size_t len = 0;
    slot_key(key, n % r->slots);
    int rc = hal->storage_get(hal->ctx, key, buf, sizeof buf, &len);
    if (rc == MC_ERR_NOT_FOUND) return MC_ERR_NOT_FOUND;
    if (rc == MC_ERR_NOSPACE) return MC_ERR_CORRUPT;
    if (rc < 0) return MC_ERR_IO;
    if (len < SLOT_HEAD) return MC_ERR_CORRUPT;
    uint32_t idlen = buf[4], tlen = (uint32_t)buf[5] | (uint32_t)buf[6] << 8;
    if (mc_get_u32(buf) != n || SLOT_HEAD + idlen + tlen != len || idlen >= ID_CAP || tlen >= MC_MSG_TEXT_CAP) {
        return MC_ERR_CORRUPT;
    }
    if (id) {
        if (idlen + 1 > id_cap) return MC_ERR_NOSPACE;
        memcpy(id, buf + SLOT_HEAD, idlen);
        id[idlen] = '\0';
    }
    if (text) {
        if (tlen + 1 > text_cap) return MC_ERR_NOSPACE;
        memcpy(text, buf + SLOT_HEAD + idlen, tlen);
        text[tlen] = '\0';
    }
    return MC_OK;
}

int mc_ring_open(mc_ring_t *r, const mc_hal_t *hal, uint32_t slots) {
    if (r == NULL || hal == NULL || slots == 0 || slots > MC_RING_MAX_SLOTS) return MC_ERR_ARG;
    memset(r, 0, sizeof *r);
    if (hal->random(hal->ctx, r->id_prefix, sizeof r->id_prefix) < 0) return MC_ERR_IO;
    uint8_t b[HDR_LEN];
    size_t len = 0;
    int rc = hal->storage_get(hal->ctx, HDR_KEY, b, sizeof b, &len);
    int fresh = 0;
    if (rc == MC_ERR_NOT_FOUND) {
        fresh = 1;
    } else if (rc < 0 && rc != MC_ERR_NOSPACE) {
        return MC_ERR_IO;
    } else if (rc == MC_ERR_NOSPACE || len != HDR_LEN || mc_get_u32(b) != HDR_MAGIC) {
        mc_log(hal, MC_LOG_ERROR, "offline queue header unreadable: starting an empty queue");
        fresh = 1;
    } else {
        r->slots = mc_get_u32(b + 4);
        r->first = mc_get_u32(b + 8);
        r->next = mc_get_u32(b + 12);
        r->dropped = mc_get_u32(b + 16);
        if (r->slots == 0 || r->slots > MC_RING_MAX_SLOTS || r->next - r->first > r->slots) {
            mc_log(hal, MC_LOG_ERROR, "offline queue header inconsistent: starting an empty queue");
            fresh = 1;
        }
    }
    if (fresh) {
        uint32_t dropped = r->dropped;
        memset(r->live, 0, sizeof r->live);
        r->slots = slots;
        r->first = r->next = 0;
        r->dropped = dropped;
        for (uint32_t s = 0; s < MC_RING_MAX_SLOTS; s++) {
            char key[8];
            slot_key(key, s);
            hal->storage_erase(hal->ctx, key);
        }
        return save_header(r, hal);
    }
    uint32_t before_first = r->first, before_dropped = r->dropped;
    for (uint32_t n = r->first; n != r->next; n++) {
        rc = read_slot(r, hal, n, NULL, 0, NULL, 0);
        if (rc == MC_OK) {
            set_live(r, n, 1);
        } else if (rc == MC_ERR_CORRUPT) {
            r->dropped++; /* overwritten by a push that lost power before its header write */
        } else if (rc == MC_ERR_IO) {
            return rc;
        }
    }
    skip_holes(r);
    if (r->first != before_first || r->dropped != before_dropped) return save_header(r, hal);
    return MC_OK;
}

uint32_t mc_ring_count(const mc_ring_t *r) {
    uint32_t c = 0;
    for (uint32_t i = 0; i < MC_RING_MAX_SLOTS / 32; i++) {
        uint32_t v = r->live[i];
        while (v) {
            v &= v - 1u;
            c++;
        }
    }
    return c;
}

static void make_id(const mc_ring_t *r, uint32_t n, char out[ID_CAP]) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < sizeof r->id_prefix; i++) {
        out[o++] = hex[r->id_prefix[i] >> 4];
        out[o++] = hex[r->id_prefix[i] & 15];
    }
    out[o++] = '-';
    char digits[11];
    int k = 0;
    do {
        digits[k++] = (char)('0' + (int)(n % 10u));
        n /= 10u;
    } while (n);
    while (k) out[o++] = digits[--k];
    out[o] = '\0';
}

int mc_ring_push(mc_ring_t *r, const mc_hal_t *hal, const char *text, char *id_out, size_t id_cap) {
    if (r == NULL || hal == NULL || text == NULL) return MC_ERR_ARG;
    size_t tlen = strlen(text);
    if (tlen == 0 || tlen >= MC_MSG_TEXT_CAP || mc_utf8_chars(text, tlen) < 0) return MC_ERR_ARG;
    char id[ID_CAP];
    make_id(r, r->next, id);
    size_t idlen = strlen(id);
    if (id_out != NULL && idlen + 1 > id_cap) return MC_ERR_NOSPACE;
    mc_ring_t before = *r;
    if (r->next - r->first == r->slots) { /* full: the oldest goes */
        if (is_live(r, r->first)) r->dropped++;
        set_live(r, r->first, 0);
        r->first++;
        skip_holes(r);
    }
    uint8_t buf[SLOT_HEAD + ID_CAP + MC_MSG_TEXT_CAP];
    mc_put_u32(buf, r->next);
    buf[4] = (uint8_t)idlen;
    buf[5] = (uint8_t)tlen;
    buf[6] = (uint8_t)(tlen >> 8);
    memcpy(buf + SLOT_HEAD, id, idlen);
    memcpy(buf + SLOT_HEAD + idlen, text, tlen);
    char key[8];
    slot_key(key, r->next % r->slots);
    if (hal->storage_set(hal->ctx, key, buf, SLOT_HEAD + idlen + tlen) < 0) {
        *r = before;
        return MC_ERR_IO;
    }
    set_live(r, r->next, 1);
    r->next++;
    if (save_header(r, hal) < 0) {
        *r = before;
        return MC_ERR_IO;
    }
    if (id_out != NULL) memcpy(id_out, id, idlen + 1);
    return MC_OK;
}

int mc_ring_get(const mc_ring_t *r, const mc_hal_t *hal, uint32_t i, char *id_out, size_t id_cap, char *text_out,
                size_t text_cap) {
    if (r == NULL || hal == NULL) return MC_ERR_ARG;
    for (uint32_t n = r->first; n != r->next; n++) {
        if (!is_live(r, n)) continue;
        if (i-- == 0) return read_slot(r, hal, n, id_out, id_cap, text_out, text_cap);
    }
    return MC_ERR_NOT_FOUND;
}

int mc_ring_ack(mc_ring_t *r, const mc_hal_t *hal, const char *message_id) {
    if (r == NULL || hal == NULL || message_id == NULL) return MC_ERR_ARG;
    const char *dash = strrchr(message_id, '-');
    if (dash == NULL || dash[1] == '\0') return MC_ERR_NOT_FOUND;
    uint32_t n = 0;
    for (const char *p = dash + 1; *p; p++) {
        if (*p < '0' || *p > '9' || n > 400000000u) return MC_ERR_NOT_FOUND;
        n = n * 10u + (uint32_t)(*p - '0');
    }
    if (n - r->first >= r->next - r->first || !is_live(r, n)) return MC_ERR_NOT_FOUND;
    char id[ID_CAP];
    int rc = read_slot(r, hal, n, id, sizeof id, NULL, 0);
    if (rc == MC_ERR_NOSPACE || (rc == MC_OK && strcmp(id, message_id) != 0)) return MC_ERR_NOT_FOUND;
    if (rc < 0 && rc != MC_ERR_CORRUPT && rc != MC_ERR_NOT_FOUND) return rc;
    char key[8];
    slot_key(key, n % r->slots);
    if (hal->storage_erase(hal->ctx, key) < 0) return MC_ERR_IO;
    set_live(r, n, 0);
    uint32_t first = r->first;
    skip_holes(r);
    if (r->first != first) return save_header(r, hal);
    return MC_OK;
}
