/*
 * App and model slots (see slots.h).
 */
#include "slots.h"

#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "nvs.h"

static const char *TAG = "slots";
#define MODEL_SUBTYPE ((esp_partition_subtype_t)0x40)

static esp_ota_handle_t s_ota;
static bool s_ota_open;
static size_t s_model_written;

static const esp_partition_t *partition(int kind, int slot)
{
    if (slot != 0 && slot != 1) {
        return NULL;
    }
    if (kind == SLOT_FIRMWARE) {
        return esp_partition_find_first(ESP_PARTITION_TYPE_APP,
                                        (esp_partition_subtype_t)(ESP_PARTITION_SUBTYPE_APP_OTA_0 + slot), NULL);
    }
    return esp_partition_find_first(ESP_PARTITION_TYPE_DATA, MODEL_SUBTYPE, slot == 0 ? "model_a" : "model_b");
}

esp_err_t slots_begin(int kind, int slot, size_t size)
{
    const esp_partition_t *p = partition(kind, slot);
    if (p == NULL || size == 0 || size > p->size) {
        return ESP_ERR_INVALID_SIZE;
    }
    if (kind == SLOT_FIRMWARE) {
        if (p == esp_ota_get_running_partition()) {
            return ESP_ERR_INVALID_STATE; /* never overwrite the image that runs */
        }
        if (s_ota_open) {
            esp_ota_abort(s_ota);
        }
        esp_err_t err = esp_ota_begin(p, size, &s_ota);
        s_ota_open = err == ESP_OK;
        return err;
    }
    s_model_written = 0;
    const size_t sector = p->erase_size;
    return esp_partition_erase_range(p, 0, (size + sector - 1) / sector * sector);
}

esp_err_t slots_write(int kind, int slot, const void *data, size_t len)
{
    if (kind == SLOT_FIRMWARE) {
        return s_ota_open ? esp_ota_write(s_ota, data, len) : ESP_ERR_INVALID_STATE;
    }
    const esp_partition_t *p = partition(kind, slot);
    if (p == NULL || s_model_written + len > p->size) {
        return ESP_ERR_INVALID_SIZE;
    }
    esp_err_t err = esp_partition_write(p, s_model_written, data, len);
    if (err == ESP_OK) {
        s_model_written += len;
    }
    return err;
}

esp_err_t slots_finish(int kind, int slot)
{
    (void)slot;
    if (kind != SLOT_FIRMWARE) {
        return ESP_OK;
    }
    if (!s_ota_open) {
        return ESP_ERR_INVALID_STATE;
    }
    s_ota_open = false;
    return esp_ota_end(s_ota); /* checks the app image header, segments and its own SHA-256 */
}

esp_err_t slots_set_boot(int kind, int slot)
{
    const esp_partition_t *p = partition(kind, slot);
    if (p == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (kind == SLOT_FIRMWARE) {
        return esp_ota_set_boot_partition(p);
    }
    nvs_handle_t h;
    esp_err_t err = nvs_open("mc_slots", NVS_READWRITE, &h);
    if (err == ESP_OK) {
        err = nvs_set_u8(h, "model", (uint8_t)slot);
        if (err == ESP_OK) err = nvs_commit(h);
        nvs_close(h);
    }
    return err;
}

int slots_running_firmware(void)
{
    const esp_partition_t *running = esp_ota_get_running_partition();
    return running->subtype == ESP_PARTITION_SUBTYPE_APP_OTA_1 ? 1 : 0;
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
    nvs_handle_t h;
    uint8_t active = 0xff;
    if (nvs_open("mc_slots", NVS_READONLY, &h) == ESP_OK) {
        nvs_get_u8(h, "model", &active);
        nvs_close(h);
    }
    const esp_partition_t *p = partition(SLOT_MODEL, active);
    const void *ptr = NULL;
    esp_partition_mmap_handle_t handle;
    if (p == NULL || esp_partition_mmap(p, 0, p->size, ESP_PARTITION_MMAP_DATA, &ptr, &handle) != ESP_OK) {
        return NULL;
    }
    *size = p->size;
    return ptr;
}
