/* Internal helpers shared by the core's modules (not part of the public API). */
#ifndef MC_INTERNAL_H
#define MC_INTERNAL_H

#include <string.h>

#include "mc_common.h"
#include "mc_hal.h"

static inline void mc_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t mc_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void mc_put_i64(uint8_t *p, int64_t v) {
    mc_put_u32(p, (uint32_t)((uint64_t)v & 0xFFFFFFFFu));
    mc_put_u32(p + 4, (uint32_t)((uint64_t)v >> 32));
}

static inline int64_t mc_get_i64(const uint8_t *p) {
    return (int64_t)((uint64_t)mc_get_u32(p) | (uint64_t)mc_get_u32(p + 4) << 32);
}

/* Copy a NUL-terminated string into a fixed buffer; MC_ERR_NOSPACE if it does not fit. */
static inline int mc_copy(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n + 1 > cap) return MC_ERR_NOSPACE;
    memcpy(dst, src, n + 1);
    return (int)n;
}

static inline void mc_log(const mc_hal_t *hal, int level, const char *msg) {
    if (hal && hal->log) hal->log(hal->ctx, level, msg);
}

static inline void mc_show(const mc_hal_t *hal, int field, const char *text) {
    if (hal && hal->display) hal->display(hal->ctx, field, text);
}

#endif
