/* Event seq: new / duplicate / gap and the persisted last_seen (mc_seq.h). */
#include "mc_seq.h"

#include "mc_internal.h"

#define KEY "last_seq"

int mc_seq_classify(int64_t last_seen, int64_t seq) {
    if (seq <= last_seen || seq <= 0) return MC_SEQ_DUPLICATE;
    if (seq == last_seen + 1) return MC_SEQ_NEW;
    return MC_SEQ_GAP;
}

static int store(const mc_hal_t *hal, int64_t v) {
    uint8_t b[8];
    mc_put_i64(b, v);
    return hal->storage_set(hal->ctx, KEY, b, sizeof b) < 0 ? MC_ERR_IO : MC_OK;
}

int mc_seq_load(mc_seq_t *s, const mc_hal_t *hal) {
    if (s == NULL || hal == NULL) return MC_ERR_ARG;
    memset(s, 0, sizeof *s);
    uint8_t b[8];
    size_t n = 0;
    int r = hal->storage_get(hal->ctx, KEY, b, sizeof b, &n);
    if (r == MC_ERR_NOT_FOUND) return MC_OK;
    if (r < 0 && r != MC_ERR_NOSPACE) return MC_ERR_IO;
    if (r == MC_ERR_NOSPACE || n != sizeof b || mc_get_i64(b) < 0) return MC_ERR_CORRUPT;
    s->last_seen = mc_get_i64(b);
    return MC_OK;
}

int mc_seq_check(mc_seq_t *s, int64_t seq) {
    int c = mc_seq_classify(s->last_seen, seq);
    if (c == MC_SEQ_DUPLICATE) s->duplicates++;
    if (c == MC_SEQ_GAP) {
        s->gaps++;
        s->last_gap_from = s->last_seen;
        s->last_gap_to = seq;
    }
    return c;
}

int mc_seq_commit(mc_seq_t *s, const mc_hal_t *hal, int64_t seq) {
    if (seq <= s->last_seen) return MC_ERR_STATE;
    int r = store(hal, seq);
    if (r == MC_OK) s->last_seen = seq;
    return r;
}

int mc_seq_on_welcome(mc_seq_t *s, const mc_hal_t *hal, int64_t host_last_seq) {
    if (s->last_seen <= host_last_seq) return 0;
    int r = store(hal, 0);
    if (r < 0) return r;
    s->last_seen = 0;
    return 1;
}
