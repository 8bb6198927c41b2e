/* A/B slot records with boot counting and rollback (mc_slots.h). */
#include "mc_slots.h"

#include "mc_internal.h"

#define MAGIC 0x31534C53u /* "SLS1" */
#define REC_LEN (4 * 7 + 4 * MC_VERSION_CAP)

static const char *key_of(int kind) { return kind == MC_KIND_MODEL ? "slot_model" : "slot_fw"; }

int mc_slots_save(const mc_slots_t *s, const mc_hal_t *hal) {
    uint8_t b[REC_LEN];
    memset(b, 0, sizeof b);
    mc_put_u32(b, MAGIC);
    mc_put_u32(b + 4, (uint32_t)s->kind);
    mc_put_u32(b + 8, (uint32_t)s->active);
    mc_put_u32(b + 12, (uint32_t)(s->pending + 1));
    mc_put_u32(b + 16, s->tries);
    mc_put_u32(b + 20, s->max_tries);
    mc_put_u32(b + 24, s->rollbacks);
    memcpy(b + 28, s->active_version, MC_VERSION_CAP);
    memcpy(b + 28 + MC_VERSION_CAP, s->pending_version, MC_VERSION_CAP);
    memcpy(b + 28 + 2 * MC_VERSION_CAP, s->other_version, MC_VERSION_CAP);
    memcpy(b + 28 + 3 * MC_VERSION_CAP, s->failed_version, MC_VERSION_CAP);
    return hal->storage_set(hal->ctx, key_of(s->kind), b, sizeof b) < 0 ? MC_ERR_IO : MC_OK;
}

static int valid_str(const char *p) { return memchr(p, '\0', MC_VERSION_CAP) != NULL; }

int mc_slots_load(mc_slots_t *s, const mc_hal_t *hal, int kind, const char *factory_version, uint32_t max_tries) {
    if (s == NULL || hal == NULL || (kind != MC_KIND_FIRMWARE && kind != MC_KIND_MODEL)) return MC_ERR_ARG;
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->pending = MC_SLOT_NONE;
    s->max_tries = max_tries ? max_tries : MC_SLOTS_DEFAULT_MAX_TRIES;
    uint8_t b[REC_LEN];
    size_t len = 0;
    int rc = hal->storage_get(hal->ctx, key_of(kind), b, sizeof b, &len);
    if (rc == MC_ERR_NOT_FOUND) {
        if (factory_version && mc_copy(s->active_version, MC_VERSION_CAP, factory_version) < 0) return MC_ERR_ARG;
        return mc_slots_save(s, hal);
    }
    if (rc < 0 && rc != MC_ERR_NOSPACE) return MC_ERR_IO;
    if (rc == MC_ERR_NOSPACE || len != REC_LEN || mc_get_u32(b) != MAGIC || mc_get_u32(b + 4) != (uint32_t)kind) {
        return MC_ERR_CORRUPT;
    }
    s->active = (int32_t)mc_get_u32(b + 8);
    s->pending = (int32_t)mc_get_u32(b + 12) - 1;
    s->tries = mc_get_u32(b + 16);
    s->max_tries = mc_get_u32(b + 20);
    s->rollbacks = mc_get_u32(b + 24);
    memcpy(s->active_version, b + 28, MC_VERSION_CAP);
    memcpy(s->pending_version, b + 28 + MC_VERSION_CAP, MC_VERSION_CAP);
    memcpy(s->other_version, b + 28 + 2 * MC_VERSION_CAP, MC_VERSION_CAP);
    memcpy(s->failed_version, b + 28 + 3 * MC_VERSION_CAP, MC_VERSION_CAP);
    if ((s->active != 0 && s->active != 1) || (s->pending != MC_SLOT_NONE && s->pending != 1 - s->active) ||
        s->max_tries == 0 || !valid_str(s->active_version) || !valid_str(s->pending_version) ||
        !valid_str(s->other_version) || !valid_str(s->failed_version)) {
        return MC_ERR_CORRUPT;
    }
    return MC_OK;
}

int mc_slots_inactive(const mc_slots_t *s) { return 1 - s->active; }

int mc_slots_current(const mc_slots_t *s) { return s->pending != MC_SLOT_NONE ? s->pending : s->active; }

int mc_slots_stage(mc_slots_t *s, const mc_hal_t *hal, int slot, const char *version) {
    if (slot != mc_slots_inactive(s) || version == NULL) return MC_ERR_ARG;
    mc_slots_t before = *s;
    if (mc_copy(s->pending_version, MC_VERSION_CAP, version) < 0) return MC_ERR_ARG;
    s->pending = slot;
    s->tries = 0;
    s->other_version[0] = '\0'; /* the inactive slot was overwritten */
    if (hal->part_set_boot(hal->ctx, s->kind, slot) < 0) {
        *s = before;
        return MC_ERR_IO;
    }
    int rc = mc_slots_save(s, hal);
    if (rc < 0) {
        hal->part_set_boot(hal->ctx, s->kind, before.active);
        *s = before;
    }
    return rc;
}

static int roll_back(mc_slots_t *s, const mc_hal_t *hal) {
    memcpy(s->failed_version, s->pending_version, MC_VERSION_CAP);
    s->pending = MC_SLOT_NONE;
    s->pending_version[0] = '\0';
    s->tries = 0;
    s->rollbacks++;
    if (hal->part_set_boot(hal->ctx, s->kind, s->active) < 0) return MC_ERR_IO;
    return mc_slots_save(s, hal);
}

int mc_slots_on_boot(mc_slots_t *s, const mc_hal_t *hal) {
    if (s->pending == MC_SLOT_NONE) return MC_BOOT_ACTIVE;
    if (s->tries >= s->max_tries) {
        int rc = roll_back(s, hal);
        return rc < 0 ? rc : MC_BOOT_ROLLED_BACK;
    }
    s->tries++; /* counted before the new image runs: a crash during its test counts */
    int rc = mc_slots_save(s, hal);
    return rc < 0 ? rc : MC_BOOT_TESTING;
}

int mc_slots_mark_valid(mc_slots_t *s, const mc_hal_t *hal) {
    if (s->pending == MC_SLOT_NONE) return MC_ERR_STATE;
    memcpy(s->other_version, s->active_version, MC_VERSION_CAP);
    memcpy(s->active_version, s->pending_version, MC_VERSION_CAP);
    s->active = s->pending;
    s->pending = MC_SLOT_NONE;
    s->pending_version[0] = '\0';
    s->tries = 0;
    return mc_slots_save(s, hal);
}

int mc_slots_mark_bad(mc_slots_t *s, const mc_hal_t *hal) {
    if (s->pending == MC_SLOT_NONE) return MC_ERR_STATE;
    return roll_back(s, hal);
}

int mc_slots_revert(mc_slots_t *s, const mc_hal_t *hal) {
    if (s->pending != MC_SLOT_NONE) return mc_slots_mark_bad(s, hal);
    if (s->other_version[0] == '\0') return MC_ERR_STATE;
    char bad[MC_VERSION_CAP];
    memcpy(bad, s->active_version, MC_VERSION_CAP);
    memcpy(s->active_version, s->other_version, MC_VERSION_CAP);
    s->other_version[0] = '\0'; /* never revert to the halted release */
    memcpy(s->failed_version, bad, MC_VERSION_CAP);
    s->active = 1 - s->active;
    s->rollbacks++;
    if (hal->part_set_boot(hal->ctx, s->kind, s->active) < 0) return MC_ERR_IO;
    return mc_slots_save(s, hal);
}
