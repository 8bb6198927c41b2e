/*
 * Boot and the main loop of the MicroClaw terminal. Every decision is the core's
 * (microclaw_core: pairing, seq/replay, the offline queue, OTA checks, slots, the state machine);
 * this file only moves events between the hardware and the core, in one task:
 *
 *   NVS + factory data -> board + screen -> core init (slot records: a pending image is under
 *   test) -> Wi-Fi -> loop { connect with backoff (client certificate once paired), frames in,
 *   push-to-talk, ticks, OTA downloads, the self-test deadline }.
 *
 * The WebSocket client and the button run in their own tasks and only post to this task's
 * queue, so the core is never entered from two tasks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audio.h"
#include "board.h"
#include "esp_app_desc.h"
#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "freertos/task.h"
#include "hal_esp.h"
#include "microclaw_core.h"
#include "net.h"
#include "provision.h"
#include "sdkconfig.h"
#include "slots.h"
#include "ui.h"

static const char *TAG = "app";

typedef enum { MSG_NET_UP, MSG_NET_TEXT, MSG_NET_DOWN, MSG_PTT } msg_kind_t;

typedef struct {
    msg_kind_t kind;
    uint32_t link; /* which link the event is about: stale events of a closed link are ignored */
    int value;  /* close code, or 1/0 for the button */
    char *text; /* MSG_NET_TEXT: a heap copy, freed by the loop */
    size_t len;
} msg_t;

static QueueHandle_t s_queue;
static uint32_t s_link; /* incremented per net_open */
static factory_t s_factory;
static mc_hal_t s_hal;
static mc_device_t s_dev; /* ~60 KiB: static, not on a stack */
static char s_cert[MC_PEM_CAP];
static char s_key[600];

static void on_net(net_event_t event, const char *data, size_t len, int close_code, void *ctx)
{
    msg_t m = {.value = close_code, .link = (uint32_t)(uintptr_t)ctx};
    if (event == NET_UP) {
        m.kind = MSG_NET_UP;
    } else if (event == NET_DOWN) {
        m.kind = MSG_NET_DOWN;
    } else {
        m.kind = MSG_NET_TEXT;
        m.text = malloc(len + 1);
        if (m.text == NULL) {
            return; /* dropped: the gateway replays events, and messages stay queued until acked */
        }
        memcpy(m.text, data, len);
        m.text[len] = '\0';
        m.len = len;
    }
    if (xQueueSend(s_queue, &m, pdMS_TO_TICKS(1000)) != pdTRUE) {
        free(m.text);
    }
}

static void on_ptt(bool down, void *ctx)
{
    (void)ctx;
    const msg_t m = {.kind = MSG_PTT, .value = down ? 1 : 0};
    xQueueSend(s_queue, &m, 0);
}

static bool s_link_with_cert;

static esp_err_t open_link(void)
{
    const bool paired = mc_pairing_is_paired(&s_hal) == 1 &&
                        hal_esp_tls_identity(s_cert, sizeof s_cert, s_key, sizeof s_key) == ESP_OK;
    const net_config_t cfg = {
        .url = s_factory.gateway_url,
        .ca_pem = s_factory.ca_pem,
        .cert_pem = paired ? s_cert : NULL,
        .key_pem = paired ? s_key : NULL,
        .max_frame = MC_FRAME_IN_MAX,
        .cb = on_net,
        .ctx = (void *)(uintptr_t)(++s_link),
    };
    s_link_with_cert = paired;
    ESP_LOGI(TAG, "connecting to %s (%s)", cfg.url, paired ? "session" : "pairing");
    return net_open(&cfg);
}

/* The offer's url is a path on the gateway (docs/device-protocol.md "OTA"): https on its port,
 * with the device's client certificate. */
static esp_err_t download_offer(void)
{
    char url[MC_URL_CAP + PROVISION_URL_MAX];
    const char *host = strstr(s_factory.gateway_url, "://");
    if (s_dev.offer.url[0] == '/' && host != NULL) {
        snprintf(url, sizeof url, "https%s%s", host, s_dev.offer.url);
    } else {
        strlcpy(url, s_dev.offer.url, sizeof url);
    }
    if (hal_esp_tls_identity(s_cert, sizeof s_cert, s_key, sizeof s_key) != ESP_OK) {
        return ESP_ERR_INVALID_STATE;
    }
    const esp_http_client_config_t cfg = {
        .url = url,
        .cert_pem = s_factory.ca_pem,
        .client_cert_pem = s_cert,
        .client_key_pem = s_key,
        .timeout_ms = 15000,
        .buffer_size = 4096,
    };
    esp_http_client_handle_t http = esp_http_client_init(&cfg);
    if (http == NULL) {
        return ESP_FAIL;
    }
    esp_err_t err = esp_http_client_open(http, 0);
    if (err == ESP_OK && (esp_http_client_fetch_headers(http) < 0 || esp_http_client_get_status_code(http) != 200)) {
        err = ESP_FAIL;
    }
    if (err == ESP_OK && mc_device_ota_begin(&s_dev) != MC_OK) {
        err = ESP_FAIL;
    }
    static uint8_t chunk[4096];
    while (err == ESP_OK) {
        const int n = esp_http_client_read(http, (char *)chunk, sizeof chunk);
        if (n < 0) {
            err = ESP_FAIL;
        } else if (n == 0) {
            break;
        } else if (mc_device_ota_write(&s_dev, chunk, (size_t)n) != MC_OK) {
            err = ESP_FAIL; /* past the manifest's size: the core aborted */
        }
    }
    esp_http_client_close(http);
    esp_http_client_cleanup(http);
    if (err == ESP_OK && mc_device_ota_finish(&s_dev) != MC_OK) {
        err = ESP_FAIL; /* size or SHA-256 differ from the signed manifest: nothing staged */
    }
    return err;
}

static void run(void)
{
    const uint64_t boot_ms = (uint64_t)(esp_timer_get_time() / 1000);
    bool testing = s_dev.boot_fw == MC_BOOT_TESTING || slots_firmware_pending_verify();
    uint32_t backoff_ms = 500;
    uint64_t next_connect_ms = 0;
    bool link_open = false;
    uint64_t next_offer_ms = 0;
    for (;;) {
        msg_t m;
        const uint64_t now = (uint64_t)(esp_timer_get_time() / 1000);
        if (!link_open && now >= next_connect_ms) {
            link_open = open_link() == ESP_OK;
            mc_device_event(&s_dev, MC_EV_NET_UP);
            next_connect_ms = now + backoff_ms + esp_random() % 250;
            backoff_ms = backoff_ms < 30000 ? backoff_ms * 2 : 30000;
        }
        if (xQueueReceive(s_queue, &m, pdMS_TO_TICKS(100)) == pdTRUE) {
            if (m.kind != MSG_PTT && (!link_open || m.link != s_link)) {
                free(m.text); /* from a link already closed */
                continue;
            }
            switch (m.kind) {
            case MSG_NET_UP:
                mc_device_connected(&s_dev);
                break;
            case MSG_NET_TEXT:
                mc_device_on_text(&s_dev, m.text, m.len); /* a refused frame is counted, not fatal */
                free(m.text);
                break;
            case MSG_NET_DOWN:
                ESP_LOGW(TAG, "link down (close %d)", m.value);
                mc_device_disconnected(&s_dev);
                net_close();
                link_open = false;
                if (m.value == 4401 || m.value == 4403) {
                    /* certificate refused or revoked: pair again from scratch */
                    mc_pairing_forget(&s_hal);
                }
                break;
            case MSG_PTT:
                mc_device_event(&s_dev, m.value ? MC_EV_PTT_DOWN : MC_EV_PTT_UP);
                break;
            }
        }
        if (s_dev.welcomed) {
            backoff_ms = 500;
        }
        mc_device_tick(&s_dev);
        if (link_open && !s_link_with_cert && mc_pairing_is_paired(&s_hal) == 1) {
            /* paired on the pre-auth link: reconnect with the new certificate right away */
            net_close();
            mc_device_disconnected(&s_dev);
            link_open = false;
            backoff_ms = 500;
            next_connect_ms = 0;
        }

        if (testing && s_dev.welcomed) {
            mc_device_self_test(&s_dev, MC_KIND_FIRMWARE, 1, "");
            slots_firmware_mark_valid();
            testing = false;
            ESP_LOGI(TAG, "self-test passed: firmware %s marked valid", mc_device_version(&s_dev, MC_KIND_FIRMWARE));
        } else if (testing && now - boot_ms > (uint64_t)CONFIG_MICROCLAW_SELFTEST_TIMEOUT_S * 1000) {
            mc_device_self_test(&s_dev, MC_KIND_FIRMWARE, 0, "no welcome from the gateway");
            slots_firmware_rollback_and_reboot(); /* does not return */
        }

        if (s_dev.offer_ready && s_dev.welcomed && !testing && now >= next_offer_ms) {
            const int kind = s_dev.offer.kind;
            const esp_err_t got = download_offer();
            if (got == ESP_OK && kind == MC_KIND_FIRMWARE) {
                ESP_LOGI(TAG, "firmware %s staged: rebooting into it", s_dev.offer.version);
                net_close();
                esp_restart();
            }
            if (got != ESP_OK) {
                next_offer_ms = now + 60000; /* the gateway offers again; do not hammer it */
            }
        }
    }
}

void app_main(void)
{
    s_queue = xQueueCreate(16, sizeof(msg_t));
    ESP_ERROR_CHECK(provision_nvs_init());
    const esp_err_t factory = provision_load_factory(&s_factory);

    const board_t *board = board_get();
    static board_io_t io;
    ESP_ERROR_CHECK(board->init(&io));
    ESP_ERROR_CHECK(ui_start(&io, s_factory.device_id));
    if (factory != ESP_OK) {
        ui_set_state("error");
        ui_set_connection("not provisioned: flash fctry.bin (firmware/README.md)");
        return; /* nothing to talk to; the screen says why */
    }

    ESP_ERROR_CHECK(hal_esp_init(&s_hal));
    mc_config_t cfg = {0};
    strlcpy(cfg.device_id, s_factory.device_id, sizeof cfg.device_id);
    strlcpy(cfg.board, s_factory.board[0] ? s_factory.board : board->name, sizeof cfg.board);
    strlcpy(cfg.fw_version, esp_app_get_description()->version, sizeof cfg.fw_version);
    strlcpy(cfg.capabilities, "text", sizeof cfg.capabilities);
    memcpy(cfg.ota_pubkey, s_factory.ota_pubkey, sizeof cfg.ota_pubkey);
    const esp_partition_t *app = esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_0, NULL);
    const esp_partition_t *model = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, 0x40, "model_a");
    cfg.fw_slot_size = app ? app->size : 0;
    cfg.model_slot_size = model ? model->size : 0;
    const int rc = mc_device_init(&s_dev, &s_hal, &cfg);
    if (rc != MC_OK) {
        ESP_LOGE(TAG, "core init: %s", mc_strerror(rc));
        ui_set_state("error");
        return;
    }
    if (s_dev.boot_fw == MC_BOOT_ROLLED_BACK) {
        ESP_LOGW(TAG, "too many bad boots of the new firmware: back to the previous slot");
        esp_restart();
    }
    ESP_ERROR_CHECK(audio_start(&io, 15, on_ptt, NULL));

    ui_set_connection("Wi-Fi: provision over BLE (ESP BLE Provisioning app) if new");
    ESP_ERROR_CHECK(provision_wifi(s_factory.device_id, 0)); /* 0: wait for an address */
    run();
}
