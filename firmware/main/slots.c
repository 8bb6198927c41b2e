/*
 * App and model slots (see slots.h).
 */
#include "slots.h"

#include <string.h>

#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "nvs.h"

static const char *TAG = "slots";
#define MODEL_SUBTYPE ((esp_partition_subtype_t)0x40)

static esp_ota_handle_t s_ota;
static const esp_partition_t *s_target[2];
static size_t s_written[2];

static const esp_partition_t *model_slot(const char *name)
{
    return esp_partition_find_first(ESP_PARTITION_TYPE_DATA, MODEL_SUBTYPE, name);
}

static uint8_t active_model(void) /* 0: model_a, 1: model_b, 0xff: none */
{
    nvs_handle_t h;
    uint8_t active = 0xff;
    if (nvs_open("mc_slots", NVS_READONLY, &h) == ESP_OK) {
        nvs_get_u8(h, "model", &active);
        nvs_close(h);
    }
    return active;
}

esp_err_t slots_begin(slot_kind_t kind, size_t size)
{
    s_written[kind] = 0;
    if (kind == SLOT_FIRMWARE) {
        s_target[kind] = esp_ota_get_next_update_partition(NULL);
        if (s_target[kind] == NULL || size > s_target[kind]->size) {
            return ESP_ERR_INVALID_SIZE;
        }
        return esp_ota_begin(s_target[kind], size, &s_ota);
    }
    s_target[kind] = model_slot(active_model() == 0 ? "model_b" : "model_a");
    if (s_target[kind] == NULL || size > s_target[kind]->size) {
        return ESP_ERR_INVALID_SIZE;
    }
    const size_t sector = s_target[kind]->erase_size;
    return esp_partition_erase_range(s_target[kind], 0, (size + sector - 1) / sector * sector);
}

esp_err_t slots_write(slot_kind_t kind, const void *data, size_t len)
{
    if (s_target[kind] == NULL) {
        return ESP_ERR_INVALID_STATE;
    }
    esp_err_t err = kind == SLOT_FIRMWARE ? esp_ota_write(s_ota, data, len)
                                          : esp_partition_write(s_target[kind], s_written[kind], data, len);
    if (err == ESP_OK) {
        s_written[kind] += len;
    }
    return err;
}

esp_err_t slots_abort(slot_kind_t kind)
{
    if (kind == SLOT_FIRMWARE && s_target[kind] != NULL) {
        esp_ota_abort(s_ota);
    }
    s_target[kind] = NULL;
    return ESP_OK;
}

esp_err_t slots_commit(slot_kind_t kind)
{
    const esp_partition_t *target = s_target[kind];
    s_target[kind] = NULL;
    if (target == NULL) {
        return ESP_ERR_INVALID_STATE;
    }
    if (kind == SLOT_FIRMWARE) {
        /* esp_ota_end checks the image (header, segments, the app's own SHA-256) on top of the
         * core's manifest checks; the boot partition switches only when it passes. */
        esp_err_t err = esp_ota_end(s_ota);
        return err == ESP_OK ? esp_ota_set_boot_partition(target) : err;
    }
    nvs_handle_t h;
    esp_err_t err = nvs_open("mc_slots", NVS_READWRITE, &h);
    if (err == ESP_OK) {
        err = nvs_set_u8(h, "model", strcmp(target->label, "model_a") == 0 ? 0 : 1);
        if (err == ESP_OK) err = nvs_commit(h);
        nvs_close(h);
    }
    return err;
}

bool slots_firmware_pending_verify(void)
{
    esp_ota_img_states_t state;
    return esp_ota_get_state_partition(esp_ota_get_running_partition(), &state) == ESP_OK &&
           state == ESP_OTA_IMG_PENDING_VERIFY;
}

esp_err_t slots_firmware_mark_valid(void)
{
    return esp_ota_mark_app_valid_cancel_rollback();
}

void slots_firmware_rollback_and_reboot(void)
{
    ESP_LOGE(TAG, "self-test failed: rolling back to the previous firmware");
    esp_ota_mark_app_invalid_rollback_and_reboot();
}

const void *slots_model_map(size_t *size)
{
    const uint8_t active = active_model();
    if (active > 1) {
        return NULL;
    }
    const esp_partition_t *p = model_slot(active == 0 ? "model_a" : "model_b");
    const void *ptr = NULL;
    esp_partition_mmap_handle_t handle;
    if (p == NULL || esp_partition_mmap(p, 0, p->size, ESP_PARTITION_MMAP_DATA, &ptr, &handle) != ESP_OK) {
        return NULL;
    }
    *size = p->size;
    return ptr;
}
