/*
 * One WebSocket connection to the gateway over TLS (esp_websocket_client): the CA is the
 * provisioned device CA only; the client certificate and key (from NVS) are presented once
 * paired, and left out for the pairing connection. Text frames are reassembled (the client hands
 * over fragments) and delivered whole; reconnecting is the core's decision (auto-reconnect off).
 */
#pragma once

#include <stddef.h>

#include "esp_err.h"

typedef enum { NET_UP, NET_TEXT, NET_DOWN } net_event_t;

/* Called from the websocket client's task. For NET_TEXT, `data`/`len` is one whole text frame; for
 * NET_DOWN, `close_code` is the peer's close code or 0 when the link just dropped. */
typedef void (*net_cb)(net_event_t event, const char *data, size_t len, int close_code, void *ctx);

typedef struct {
    const char *url;
    const char *ca_pem;
    const char *cert_pem; /* NULL: no client certificate (pairing) */
    const char *key_pem;
    size_t max_frame;     /* larger frames are dropped and the connection closed (1009) */
    net_cb cb;
    void *ctx;
} net_config_t;

esp_err_t net_open(const net_config_t *cfg);
esp_err_t net_send_text(const char *data, size_t len);
void net_close(void);
