/* The offline queue of device -> host messages: bounded, persisted through the storage HAL
 * so it survives reboots, oldest dropped (and counted) when full, an item removed only when
 * the gateway acks it.
 *
 * Layout in storage: key "rq_hdr" (first, next, dropped, slots) and one key per slot
 * "rq_<n>" holding {n, message_id, text}. Item n lives in slot n % slots. A push writes the
 * slot, then the header; a slot whose stored n is not the one the header expects (power lost
 * between the two writes while overwriting the oldest) is counted as dropped at the next open;
 * an absent slot was acked. Only the header and a bitmap of live slots are kept in RAM: the
 * texts stay in storage until sent. */
#ifndef MC_RING_H
#define MC_RING_H

#include "mc_common.h"
#include "mc_hal.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MC_RING_MAX_SLOTS 64
#define MC_RING_DEFAULT_SLOTS 32

typedef struct {
    uint32_t slots;   /* capacity in messages (1..MC_RING_MAX_SLOTS) */
    uint32_t first;   /* number of the oldest item that may be live */
    uint32_t next;    /* number the next push gets */
    uint32_t dropped; /* items dropped because the queue was full (persisted) */
    uint32_t live[MC_RING_MAX_SLOTS / 32]; /* bit (n % slots): item n is queued */
    uint8_t id_prefix[6];                  /* random, per open: message ids are unique across resets */
} mc_ring_t;

/* Open (or create) the queue; `slots` is used only when no queue is stored yet. */
int mc_ring_open(mc_ring_t *r, const mc_hal_t *hal, uint32_t slots);
/* Queue text (1..MC_MSG_TEXT_CAP-1 bytes of UTF-8). The generated message id
 * ("<12 hex>-<n>") is copied to id_out (cap >= 24). Drops the oldest when full. */
int mc_ring_push(mc_ring_t *r, const mc_hal_t *hal, const char *text, char *id_out, size_t id_cap);
/* Items queued now. */
uint32_t mc_ring_count(const mc_ring_t *r);
/* The i-th oldest queued item (0-based). */
int mc_ring_get(const mc_ring_t *r, const mc_hal_t *hal, uint32_t i, char *id_out, size_t id_cap,
                char *text_out, size_t text_cap);
/* Remove the item with this id (any position); MC_ERR_NOT_FOUND if it is not queued. */
int mc_ring_ack(mc_ring_t *r, const mc_hal_t *hal, const char *message_id);
/* Storage bytes one slot takes at most (for capacity figures). */
size_t mc_ring_slot_bytes(void);

#ifdef __cplusplus
}
#endif
#endif
