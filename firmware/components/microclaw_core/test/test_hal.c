#include "test_hal.h"

#include <string.h>

static t_entry *find(t_hal *t, const char *key) {
    for (int i = 0; i < T_KEYS; i++) {
        if (t->kv[i].used && strcmp(t->kv[i].key, key) == 0) return &t->kv[i];
    }
    return NULL;
}

static int s_get(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len) {
    t_entry *e = find((t_hal *)ctx, key);
    if (e == NULL) return MC_ERR_NOT_FOUND;
    *len = e->len;
    if (e->len > cap) return MC_ERR_NOSPACE;
    memcpy(buf, e->val, e->len);
    return MC_OK;
}

static int s_set(void *ctx, const char *key, const uint8_t *data, size_t len) {
    t_hal *t = (t_hal *)ctx;
    if (strlen(key) > 15 || len > T_VAL) return MC_ERR_ARG;
    if (t->sets_until_fail == 0) return MC_ERR_IO;
    if (t->sets_until_fail > 0) t->sets_until_fail--;
    t_entry *e = find(t, key);
    for (int i = 0; e == NULL && i < T_KEYS; i++) {
        if (!t->kv[i].used) {
            e = &t->kv[i];
            e->used = 1;
            strcpy(e->key, key);
        }
    }
    if (e == NULL) return MC_ERR_NOSPACE;
    memcpy(e->val, data, len);
    e->len = len;
    return MC_OK;
}

static int s_erase(void *ctx, const char *key) {
    t_entry *e = find((t_hal *)ctx, key);
    if (e) e->used = 0;
    return MC_OK;
}

static uint64_t now_ms(void *ctx) { return ((t_hal *)ctx)->now; }

static int rnd(void *ctx, uint8_t *buf, size_t len) {
    t_hal *t = (t_hal *)ctx;
    for (size_t i = 0; i < len; i++) {
        t->rnd = t->rnd * 1103515245u + 12345u;
        buf[i] = (uint8_t)(t->rnd >> 16);
    }
    return MC_OK;
}

static int net_send(void *ctx, const char *frame, size_t len) {
    t_hal *t = (t_hal *)ctx;
    if (!t->net_up) return MC_ERR_IO;
    if (t->nframes >= T_FRAMES || len >= T_FRAME) return MC_ERR_IO;
    memcpy(t->frames[t->nframes], frame, len);
    t->frames[t->nframes][len] = '\0';
    t->nframes++;
    return MC_OK;
}

static void display(void *ctx, int field, const char *text) {
    t_hal *t = (t_hal *)ctx;
    if (field < 0 || field > 5) return;
    strncpy(t->display[field], text, 255);
    t->display[field][255] = '\0';
}

static int audio_ctl(void *ctx, int cmd) {
    ((t_hal *)ctx)->audio_last = cmd;
    return MC_OK;
}

static int p_begin(void *ctx, int kind, int slot, uint32_t size) {
    t_hal *t = (t_hal *)ctx;
    if (size > T_PART) return MC_ERR_SIZE;
    t->part_len[kind][slot] = 0;
    t->part_open[kind][slot] = 1;
    memset(t->part[kind][slot], 0xFF, T_PART);
    return MC_OK;
}

static int p_write(void *ctx, int kind, int slot, const uint8_t *data, size_t len) {
    t_hal *t = (t_hal *)ctx;
    if (!t->part_open[kind][slot] || t->part_len[kind][slot] + len > T_PART) return MC_ERR_IO;
    memcpy(t->part[kind][slot] + t->part_len[kind][slot], data, len);
    t->part_len[kind][slot] += (uint32_t)len;
    return MC_OK;
}

static int p_finish(void *ctx, int kind, int slot) {
    t_hal *t = (t_hal *)ctx;
    if (!t->part_open[kind][slot]) return MC_ERR_STATE;
    t->part_open[kind][slot] = 0;
    return MC_OK;
}

static int p_boot(void *ctx, int kind, int slot) {
    ((t_hal *)ctx)->boot[kind] = slot;
    return MC_OK;
}

static void reboot(void *ctx) { ((t_hal *)ctx)->reboots++; }

static int csr_make(void *ctx, const char *device_id, char *out, size_t cap, size_t *len) {
    t_hal *t = (t_hal *)ctx;
    if (t->csr_fail) return MC_ERR_IO;
    static const char head[] = "-----BEGIN CERTIFICATE REQUEST-----\nTESTONLY";
    static const char tail[] = "\n-----END CERTIFICATE REQUEST-----\n";
    size_t n = strlen(head) + strlen(device_id) + strlen(tail);
    if (n + 1 > cap) return MC_ERR_NOSPACE;
    strcpy(out, head);
    strcat(out, device_id);
    strcat(out, tail);
    *len = n;
    return MC_OK;
}

void t_hal_init(t_hal *t, mc_hal_t *hal) {
    memset(t, 0, sizeof *t);
    t->sets_until_fail = -1;
    t->net_up = 1;
    t->rnd = 42;
    t->now = 1000;
    memset(hal, 0, sizeof *hal);
    hal->ctx = t;
    hal->storage_get = s_get;
    hal->storage_set = s_set;
    hal->storage_erase = s_erase;
    hal->now_ms = now_ms;
    hal->random = rnd;
    hal->net_send = net_send;
    hal->display = display;
    hal->audio_ctl = audio_ctl;
    hal->part_begin = p_begin;
    hal->part_write = p_write;
    hal->part_finish = p_finish;
    hal->part_set_boot = p_boot;
    hal->reboot = reboot;
    hal->csr_make = csr_make;
}

const char *t_last_frame(const t_hal *t) { return t->nframes ? t->frames[t->nframes - 1] : ""; }

int t_count_frames(const t_hal *t, const char *needle) {
    int c = 0;
    for (int i = 0; i < t->nframes; i++) {
        if (strstr(t->frames[i], needle)) c++;
    }
    return c;
}
