/*
 * Flash slots as the core addresses them (kind, slot 0/1): firmware slot n is the app partition
 * ota_n (esp_ota_ops, rollback by the bootloader), model slot 0/1 is the data partition
 * model_a/model_b (subtype 0x40; the active one is recorded in NVS). The core picks the inactive
 * slot and switches only after its manifest, size and SHA-256 checks pass.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"

enum { SLOT_FIRMWARE = 0, SLOT_MODEL = 1 }; /* the values of mc_kind_t */

esp_err_t slots_begin(int kind, int slot, size_t size); /* erase the slot for `size` bytes */
esp_err_t slots_write(int kind, int slot, const void *data, size_t len);
esp_err_t slots_finish(int kind, int slot);   /* firmware: esp_ota_end validates the image */
esp_err_t slots_set_boot(int kind, int slot); /* firmware: next boot; model: next model load */
int slots_running_firmware(void);             /* 0 or 1: the ota_n this image runs from */

/* True when this boot runs a new firmware image that has not been confirmed yet. */
bool slots_firmware_pending_verify(void);
esp_err_t slots_firmware_mark_valid(void);     /* cancels the bootloader's rollback */
void slots_firmware_rollback_and_reboot(void); /* marks this image invalid, boots the other */

/* The active model slot, memory-mapped (NULL when none was ever installed). */
const void *slots_model_map(size_t *size);
