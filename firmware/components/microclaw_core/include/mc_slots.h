/* A/B slots for firmware and for the model bundle, with self-test and rollback.
 *
 * One record per kind in storage ("slot_fw", "slot_model"): the active (known good) slot and
 * version, a pending slot and version staged by OTA, and how many boots the pending slot has
 * had without passing its self-test. At each boot mc_slots_on_boot counts one more try of the
 * pending slot; past max_tries bad boots it rolls back (pending dropped, the active slot set to
 * boot again) and says so. The app runs its self-test (gateway reachable, model loads and
 * answers its golden vector) and calls mc_slots_mark_valid or mc_slots_mark_bad.
 *
 * On the S3 the bootloader's own rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE) covers an
 * image that never reaches app_main; this record covers images that boot but fail the test. */
#ifndef MC_SLOTS_H
#define MC_SLOTS_H

#include "mc_common.h"
#include "mc_hal.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MC_SLOT_NONE (-1)
#define MC_SLOTS_DEFAULT_MAX_TRIES 3

typedef enum {
    MC_BOOT_ACTIVE = 0,      /* running the known good slot */
    MC_BOOT_TESTING = 1,     /* running the pending slot: self-test, then mark valid or bad */
    MC_BOOT_ROLLED_BACK = 2  /* too many bad boots: the active slot is set to boot; reboot */
} mc_boot_t;

typedef struct {
    int32_t kind;      /* mc_kind_t */
    int32_t active;    /* 0 or 1 */
    int32_t pending;   /* 0, 1 or MC_SLOT_NONE */
    uint32_t tries;    /* boots of the pending slot so far */
    uint32_t max_tries;
    uint32_t rollbacks;
    char active_version[MC_VERSION_CAP];
    char pending_version[MC_VERSION_CAP];
    char other_version[MC_VERSION_CAP];  /* what the inactive slot holds ("" if nothing good) */
    char failed_version[MC_VERSION_CAP]; /* the last version rolled back */
} mc_slots_t;

/* Load the record (a fresh one, slot 0 running `factory_version`, when none is stored). */
int mc_slots_load(mc_slots_t *s, const mc_hal_t *hal, int kind, const char *factory_version,
                  uint32_t max_tries);
int mc_slots_save(const mc_slots_t *s, const mc_hal_t *hal);
/* The slot an OTA may write: the one that is not active. */
int mc_slots_inactive(const mc_slots_t *s);
/* The slot to run/load now: pending while testing, else active. */
int mc_slots_current(const mc_slots_t *s);
/* OTA verified `slot`: pending = slot, tries 0, HAL set_boot(slot), saved. */
int mc_slots_stage(mc_slots_t *s, const mc_hal_t *hal, int slot, const char *version);
/* At boot (or model load): returns mc_boot_t, or MC_ERR_*. Saves before returning. */
int mc_slots_on_boot(mc_slots_t *s, const mc_hal_t *hal);
/* Self-test passed: the pending slot becomes active. */
int mc_slots_mark_valid(mc_slots_t *s, const mc_hal_t *hal);
/* Self-test failed: roll back now (set_boot(active)); the caller reboots / reloads. */
int mc_slots_mark_bad(mc_slots_t *s, const mc_hal_t *hal);

/* The host halted the running release (ota.rollback): go back to the other slot if it holds a
 * known good version; MC_ERR_STATE if it holds none. The caller reboots / reloads. */
int mc_slots_revert(mc_slots_t *s, const mc_hal_t *hal);

#ifdef __cplusplus
}
#endif
#endif
