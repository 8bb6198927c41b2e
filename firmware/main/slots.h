/*
 * Flash slots: the two app slots (esp_ota_ops, rollback by the bootloader) and the two model
 * slots model_a/model_b (data partitions, subtype 0x40; the active one is recorded in NVS).
 * Writes go to the inactive slot only; nothing is switched until the image is whole and verified.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"

typedef enum { SLOT_FIRMWARE, SLOT_MODEL } slot_kind_t;

esp_err_t slots_begin(slot_kind_t kind, size_t size);         /* erase the inactive slot */
esp_err_t slots_write(slot_kind_t kind, const void *data, size_t len);
esp_err_t slots_abort(slot_kind_t kind);
esp_err_t slots_commit(slot_kind_t kind);                    /* make the written slot the boot/active one */

/* True when this boot runs a new firmware image that has not been confirmed yet. */
bool slots_firmware_pending_verify(void);
esp_err_t slots_firmware_mark_valid(void);                   /* cancels the bootloader's rollback */
void slots_firmware_rollback_and_reboot(void);               /* marks this image invalid, boots the other */

/* The active model slot's partition, memory-mapped (NULL when none was ever installed). */
const void *slots_model_map(size_t *size);
