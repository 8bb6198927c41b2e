/*
 * Factory data, device id and Wi-Fi provisioning (see provision.h).
 */
#include "provision.h"

#include <string.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "mbedtls/base64.h"
#include "mbedtls/pk.h"
#include "mbedtls/sha256.h"
#include "mbedtls/x509_crt.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "sdkconfig.h"
#include "wifi_provisioning/manager.h"
#include "wifi_provisioning/scheme_ble.h"

static const char *TAG = "provision";
static EventGroupHandle_t s_wifi;
#define WIFI_UP BIT0

esp_err_t provision_nvs_init(void)
{
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_LOGW(TAG, "nvs layout changed: erasing the default partition (pairing is lost)");
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    if (err != ESP_OK) {
        return err;
    }
    return nvs_flash_init_partition("fctry");
}

esp_err_t provision_spki_pin(const char *pem, char *out, size_t out_len)
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    unsigned char der[200];
    unsigned char digest[32];
    esp_err_t result = ESP_ERR_INVALID_ARG;
    if (mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1) == 0) {
        /* mbedtls_pk_write_pubkey_der writes at the END of the buffer and returns the length. */
        int len = mbedtls_pk_write_pubkey_der(&crt.pk, der, sizeof der);
        size_t written = 0;
        if (len > 0 && mbedtls_sha256(der + sizeof der - len, (size_t)len, digest, 0) == 0 && out_len > 7) {
            memcpy(out, "sha256/", 7);
            if (mbedtls_base64_encode((unsigned char *)out + 7, out_len - 7, &written, digest, sizeof digest) == 0) {
                result = ESP_OK;
            }
        }
    }
    mbedtls_x509_crt_free(&crt);
    return result;
}

static esp_err_t get_str(nvs_handle_t h, const char *key, char *out, size_t cap)
{
    size_t len = cap;
    return nvs_get_str(h, key, out, &len);
}

esp_err_t provision_load_factory(factory_t *out)
{
    memset(out, 0, sizeof *out);
    uint8_t mac[6];
    ESP_ERROR_CHECK(esp_read_mac(mac, ESP_MAC_WIFI_STA));
    snprintf(out->device_id, sizeof out->device_id, "%s-%02x%02x%02x", CONFIG_MICROCLAW_DEVICE_ID_PREFIX, mac[3],
             mac[4], mac[5]);

    nvs_handle_t h;
    esp_err_t err = nvs_open_from_partition("fctry", "mc_factory", NVS_READONLY, &h);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "no factory data (flash fctry.bin from firmware/tools/factory_nvs.py): %s",
                 esp_err_to_name(err));
        return ESP_ERR_INVALID_STATE;
    }
    if (get_str(h, "gateway_url", out->gateway_url, sizeof out->gateway_url) != ESP_OK) {
        strlcpy(out->gateway_url, CONFIG_MICROCLAW_GATEWAY_URL, sizeof out->gateway_url);
    }
    size_t key_len = sizeof out->ota_pubkey;
    err = get_str(h, "ca_pem", out->ca_pem, sizeof out->ca_pem);
    if (err == ESP_OK) err = get_str(h, "ca_pin", out->ca_pin, sizeof out->ca_pin);
    if (err == ESP_OK) err = nvs_get_blob(h, "ota_pubkey", out->ota_pubkey, &key_len);
    if (err == ESP_OK) err = get_str(h, "board", out->board, sizeof out->board);
    nvs_close(h);
    if (err != ESP_OK || key_len != sizeof out->ota_pubkey) {
        ESP_LOGE(TAG, "factory data incomplete: %s", esp_err_to_name(err));
        return ESP_ERR_INVALID_STATE;
    }
    char pin[PROVISION_PIN_MAX];
    if (provision_spki_pin(out->ca_pem, pin, sizeof pin) != ESP_OK || strcmp(pin, out->ca_pin) != 0) {
        ESP_LOGE(TAG, "the factory CA does not match its pin %s", out->ca_pin);
        return ESP_ERR_INVALID_STATE;
    }
    ESP_LOGI(TAG, "device %s, gateway %s, CA %s", out->device_id, out->gateway_url, out->ca_pin);
    return ESP_OK;
}

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        xEventGroupClearBits(s_wifi, WIFI_UP);
        esp_wifi_connect(); /* the core's backoff governs the gateway; Wi-Fi just retries */
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        xEventGroupSetBits(s_wifi, WIFI_UP);
    } else if (base == WIFI_PROV_EVENT && id == WIFI_PROV_END) {
        wifi_prov_mgr_deinit();
    }
}

esp_err_t provision_wifi(const char *device_id, uint32_t timeout_ms)
{
    s_wifi = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    const wifi_init_config_t cfg = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&cfg));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_event, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_event, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_PROV_EVENT, ESP_EVENT_ANY_ID, on_event, NULL));

    const wifi_prov_mgr_config_t prov = {
        .scheme = wifi_prov_scheme_ble,
        .scheme_event_handler = WIFI_PROV_SCHEME_BLE_EVENT_HANDLER_FREE_BTDM,
    };
    ESP_ERROR_CHECK(wifi_prov_mgr_init(prov));
    bool provisioned = false;
    ESP_ERROR_CHECK(wifi_prov_mgr_is_provisioned(&provisioned));
    if (!provisioned) {
        char service[32];
        snprintf(service, sizeof service, "PROV_%s", device_id);
        ESP_LOGI(TAG, "Wi-Fi not provisioned: advertising %s over BLE", service);
        ESP_ERROR_CHECK(wifi_prov_mgr_start_provisioning(WIFI_PROV_SECURITY_1, CONFIG_MICROCLAW_PROV_POP, service,
                                                         NULL));
    } else {
        wifi_prov_mgr_deinit();
        ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
        ESP_ERROR_CHECK(esp_wifi_start());
    }
    const EventBits_t bits = xEventGroupWaitBits(s_wifi, WIFI_UP, pdFALSE, pdTRUE, timeout_ms ? pdMS_TO_TICKS(timeout_ms) : portMAX_DELAY);
    return (bits & WIFI_UP) ? ESP_OK : ESP_ERR_TIMEOUT;
}
