/*
 * The gateway link on esp_websocket_client (see net.h).
 */
#include "net.h"

#include <stdlib.h>
#include <string.h>

#include "esp_log.h"
#include "esp_websocket_client.h"

static const char *TAG = "net";
static esp_websocket_client_handle_t s_client;
static net_config_t s_cfg;
static char *s_frame; /* reassembly buffer, max_frame + 1 */
static size_t s_have;
static bool s_overflow;

static void on_ws(void *arg, esp_event_base_t base, int32_t id, void *event_data)
{
    (void)arg;
    (void)base;
    const esp_websocket_event_data_t *ev = event_data;
    switch (id) {
    case WEBSOCKET_EVENT_CONNECTED:
        s_have = 0;
        s_overflow = false;
        s_cfg.cb(NET_UP, NULL, 0, 0, s_cfg.ctx);
        break;
    case WEBSOCKET_EVENT_DATA:
        if (ev->op_code == 0x08) { /* close: the first two payload bytes are the code */
            int code = ev->data_len >= 2 ? ((uint8_t)ev->data_ptr[0] << 8) | (uint8_t)ev->data_ptr[1] : 0;
            s_cfg.cb(NET_DOWN, NULL, 0, code, s_cfg.ctx);
            break;
        }
        if (ev->op_code != 0x01 && ev->op_code != 0x00) {
            break; /* pings are answered by the client; binary is unused in protocol 1 */
        }
        if (ev->payload_offset == 0) {
            s_have = 0;
            s_overflow = false;
        }
        if (s_overflow || (size_t)ev->payload_len > s_cfg.max_frame) {
            s_overflow = true;
        } else {
            memcpy(s_frame + ev->payload_offset, ev->data_ptr, (size_t)ev->data_len);
            s_have = (size_t)ev->payload_offset + (size_t)ev->data_len;
        }
        if ((size_t)(ev->payload_offset + ev->data_len) >= (size_t)ev->payload_len) {
            if (s_overflow) {
                ESP_LOGW(TAG, "frame of %d bytes over the %u limit: closing", ev->payload_len,
                         (unsigned)s_cfg.max_frame);
                esp_websocket_client_close_with_code(s_client, 1009, NULL, 0, pdMS_TO_TICKS(1000));
            } else {
                s_frame[s_have] = '\0';
                s_cfg.cb(NET_TEXT, s_frame, s_have, 0, s_cfg.ctx);
            }
        }
        break;
    case WEBSOCKET_EVENT_DISCONNECTED:
    case WEBSOCKET_EVENT_ERROR:
        s_cfg.cb(NET_DOWN, NULL, 0, 0, s_cfg.ctx);
        break;
    default:
        break;
    }
}

esp_err_t net_open(const net_config_t *cfg)
{
    net_close();
    s_cfg = *cfg;
    s_frame = malloc(cfg->max_frame + 1);
    if (s_frame == NULL) {
        return ESP_ERR_NO_MEM;
    }
    const esp_websocket_client_config_t ws = {
        .uri = cfg->url,
        .cert_pem = cfg->ca_pem, /* trust only the provisioned device CA */
        .client_cert = cfg->cert_pem,
        .client_key = cfg->key_pem,
        .disable_auto_reconnect = true,
        .network_timeout_ms = 10000,
        .ping_interval_sec = 10,
        .buffer_size = 2048,
        .task_stack = 6144,
    };
    s_client = esp_websocket_client_init(&ws);
    if (s_client == NULL) {
        return ESP_FAIL;
    }
    esp_websocket_register_events(s_client, WEBSOCKET_EVENT_ANY, on_ws, NULL);
    return esp_websocket_client_start(s_client);
}

esp_err_t net_send_text(const char *data, size_t len)
{
    if (s_client == NULL || !esp_websocket_client_is_connected(s_client)) {
        return ESP_ERR_INVALID_STATE;
    }
    return esp_websocket_client_send_text(s_client, data, (int)len, pdMS_TO_TICKS(5000)) == (int)len
               ? ESP_OK
               : ESP_FAIL;
}

void net_close(void)
{
    if (s_client != NULL) {
        esp_websocket_client_close(s_client, pdMS_TO_TICKS(2000));
        esp_websocket_client_destroy(s_client);
        s_client = NULL;
    }
    free(s_frame);
    s_frame = NULL;
}
