/* A RAM HAL for the core's tests (host and emulated Xtensa): key-value storage with fault
 * injection (a set that "loses power"), a settable clock, deterministic random, captured
 * frames, display fields and partitions. Nothing here is hardware: it is the part that cannot
 * exist off the device, replaced by RAM, and the tests say so. */
#ifndef TEST_HAL_H
#define TEST_HAL_H

#include "microclaw_core.h"

#define T_KEYS 96
#define T_VAL 4400
#define T_FRAMES 64
#define T_FRAME 4600
#define T_PART 8192

typedef struct {
    char key[16];
    size_t len;
    int used;
    uint8_t val[T_VAL];
} t_entry;

typedef struct {
    t_entry kv[T_KEYS];
    int sets_until_fail; /* -1 never; 0: the next set fails (power lost before it) */
    int net_up;
    uint64_t now;
    uint32_t rnd;
    int nframes;
    char frames[T_FRAMES][T_FRAME];
    char display[6][256];
    uint8_t part[2][2][T_PART];
    uint32_t part_len[2][2];
    int part_open[2][2];
    int boot[2];
    int reboots;
    int csr_fail;
    int audio_last;
} t_hal;

void t_hal_init(t_hal *t, mc_hal_t *hal);
/* A "reboot": the same storage, a new core. */
const char *t_last_frame(const t_hal *t);
int t_count_frames(const t_hal *t, const char *needle);

#endif
