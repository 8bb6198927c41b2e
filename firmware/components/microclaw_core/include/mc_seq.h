/* Event sequence numbers: which events are new, repeated or past a gap, and the last one
 * processed, kept in storage (key "last_seq") so a reboot resumes where it stopped.
 *
 * The gateway numbers each device's events 1, 2, 3... and on every hello replays those after
 * the device's last_seen_seq. The device processes an event, then commits its seq: an event
 * at or below last_seen is a duplicate and is skipped; one past last_seen+1 is processed but
 * counted as a gap. A welcome whose last_seq is below last_seen means the host's log was
 * reset: the device starts again from 0. */
#ifndef MC_SEQ_H
#define MC_SEQ_H

#include "mc_common.h"
#include "mc_hal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MC_SEQ_NEW = 0, MC_SEQ_DUPLICATE = 1, MC_SEQ_GAP = 2 } mc_seq_class_t;

typedef struct {
    int64_t last_seen;
    uint32_t duplicates;
    uint32_t gaps;
    int64_t last_gap_from; /* last_seen when the last gap was seen */
    int64_t last_gap_to;   /* the seq that arrived */
} mc_seq_t;

/* Pure: how `seq` relates to `last_seen` (seq <= 0 counts as a duplicate: never processed). */
int mc_seq_classify(int64_t last_seen, int64_t seq);

/* Load last_seen from storage (0 when absent); MC_ERR_CORRUPT for an unreadable record. */
int mc_seq_load(mc_seq_t *s, const mc_hal_t *hal);
/* Classify and count (duplicates, gaps); does not change last_seen. */
int mc_seq_check(mc_seq_t *s, int64_t seq);
/* After processing event `seq` (NEW or GAP): store it as last_seen. */
int mc_seq_commit(mc_seq_t *s, const mc_hal_t *hal, int64_t seq);
/* On welcome: if last_seen > host_last_seq, reset to 0 and store; 1 if reset, 0 if not. */
int mc_seq_on_welcome(mc_seq_t *s, const mc_hal_t *hal, int64_t host_last_seq);

#ifdef __cplusplus
}
#endif
#endif
