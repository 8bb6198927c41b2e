/*
 * mc_hal_t on ESP-IDF (see hal_esp.h).
 */
#include "hal_esp.h"

#include <stdlib.h>
#include <string.h>

#include "audio.h"
#include "esp_log.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "identity.h"
#include "net.h"
#include "nvs.h"
#include "slots.h"
#include "ui.h"

static const char *TAG = "core";
static nvs_handle_t s_nvs;
#define KEY_PEM_CAP 600

static int storage_get(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len)
{
    (void)ctx;
    size_t need = 0;
    esp_err_t err = nvs_get_blob(s_nvs, key, NULL, &need);
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return MC_ERR_NOT_FOUND;
    }
    if (err != ESP_OK) {
        return MC_ERR_IO;
    }
    if (need > cap) {
        return MC_ERR_NOSPACE;
    }
    *len = need;
    return nvs_get_blob(s_nvs, key, buf, len) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int storage_set(void *ctx, const char *key, const uint8_t *data, size_t len)
{
    (void)ctx;
    if (nvs_set_blob(s_nvs, key, data, len) != ESP_OK || nvs_commit(s_nvs) != ESP_OK) {
        return MC_ERR_IO;
    }
    return MC_OK;
}

static int storage_erase(void *ctx, const char *key)
{
    (void)ctx;
    esp_err_t err = nvs_erase_key(s_nvs, key);
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return MC_OK;
    }
    return (err == ESP_OK && nvs_commit(s_nvs) == ESP_OK) ? MC_OK : MC_ERR_IO;
}

static uint64_t now_ms(void *ctx)
{
    (void)ctx;
    return (uint64_t)(esp_timer_get_time() / 1000);
}

static int random_bytes(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    esp_fill_random(buf, len); /* the hardware RNG; true random once Wi-Fi/BT is on */
    return MC_OK;
}

static int net_send(void *ctx, const char *frame, size_t len)
{
    (void)ctx;
    return net_send_text(frame, len) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static void display(void *ctx, int field, const char *text)
{
    (void)ctx;
    switch (field) {
    case MC_DISPLAY_STATE: ui_set_state(text); break;
    case MC_DISPLAY_PAIR_CODE: ui_set_pairing_code(text); break;
    case MC_DISPLAY_CONNECTION: ui_set_connection(text); break;
    case MC_DISPLAY_LAST_MESSAGE: ui_set_last_message(text); break;
    case MC_DISPLAY_OTA_PROGRESS: ui_set_ota_progress(text[0] ? atoi(text) : -1); break;
    case MC_DISPLAY_ERROR: if (text[0]) ui_set_connection(text); break;
    default: break;
    }
}

static int audio_ctl(void *ctx, int cmd)
{
    (void)ctx;
    esp_err_t err = ESP_ERR_INVALID_ARG;
    switch (cmd) {
    case MC_AUDIO_CAPTURE_START: err = audio_capture(true); break;
    case MC_AUDIO_CAPTURE_STOP: err = audio_capture(false); break;
    case MC_AUDIO_PLAY_START: err = audio_play(true); break;
    case MC_AUDIO_PLAY_STOP: err = audio_play(false); break;
    default: break;
    }
    return err == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int audio_write_hal(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    return audio_write(data, len) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int part_begin(void *ctx, int kind, int slot, uint32_t size)
{
    (void)ctx;
    return slots_begin(kind, slot, size) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int part_write(void *ctx, int kind, int slot, const uint8_t *data, size_t len)
{
    (void)ctx;
    return slots_write(kind, slot, data, len) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int part_finish(void *ctx, int kind, int slot)
{
    (void)ctx;
    return slots_finish(kind, slot) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static int part_set_boot(void *ctx, int kind, int slot)
{
    (void)ctx;
    return slots_set_boot(kind, slot) == ESP_OK ? MC_OK : MC_ERR_IO;
}

static void reboot(void *ctx)
{
    (void)ctx;
    esp_restart();
}

static int csr_make(void *ctx, const char *device_id, char *out, size_t cap, size_t *len)
{
    (void)ctx;
    static char key_pem[KEY_PEM_CAP];
    size_t key_len = sizeof key_pem;
    const bool have_key = nvs_get_str(s_nvs, "dev_key", key_pem, &key_len) == ESP_OK;
    if (identity_make_csr(device_id, have_key ? key_pem : NULL, key_pem, sizeof key_pem, out, cap) != ESP_OK) {
        return MC_ERR_IO;
    }
    if (!have_key && (nvs_set_str(s_nvs, "dev_key", key_pem) != ESP_OK || nvs_commit(s_nvs) != ESP_OK)) {
        return MC_ERR_IO;
    }
    *len = strlen(out);
    return MC_OK;
}

static void log_line(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (level == MC_LOG_ERROR) {
        ESP_LOGE(TAG, "%s", msg);
    } else if (level == MC_LOG_WARN) {
        ESP_LOGW(TAG, "%s", msg);
    } else {
        ESP_LOGI(TAG, "%s", msg);
    }
}

esp_err_t hal_esp_init(mc_hal_t *hal)
{
    esp_err_t err = nvs_open("microclaw", NVS_READWRITE, &s_nvs);
    if (err != ESP_OK) {
        return err;
    }
    *hal = (mc_hal_t){
        .ctx = NULL,
        .storage_get = storage_get,
        .storage_set = storage_set,
        .storage_erase = storage_erase,
        .now_ms = now_ms,
        .random = random_bytes,
        .net_send = net_send,
        .display = display,
        .audio_ctl = audio_ctl,
        .audio_write = audio_write_hal,
        .part_begin = part_begin,
        .part_write = part_write,
        .part_finish = part_finish,
        .part_set_boot = part_set_boot,
        .reboot = reboot,
        .csr_make = csr_make,
        .log = log_line,
    };
    return ESP_OK;
}

esp_err_t hal_esp_tls_identity(char *cert, size_t cert_cap, char *key, size_t key_cap)
{
    size_t len = 0;
    if (storage_get(NULL, "cert", (uint8_t *)cert, cert_cap - 1, &len) != MC_OK) {
        return ESP_ERR_NOT_FOUND;
    }
    cert[len] = '\0';
    size_t key_len = key_cap;
    return nvs_get_str(s_nvs, "dev_key", key, &key_len) == ESP_OK ? ESP_OK : ESP_ERR_NOT_FOUND;
}
