/*
 * Push-to-talk capture and playback through esp_codec_dev (see audio.h).
 */
#include "audio.h"

#include <string.h>

#include "esp_check.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

static const char *TAG = "audio";
#define RATE CONFIG_MICROCLAW_AUDIO_SAMPLE_RATE
#define FRAME_SAMPLES (RATE / 50) /* 20 ms */

static struct {
    const board_io_t *io;
    int16_t *buf;
    size_t cap;
    audio_utterance_cb cb;
    void *ctx;
} s;

static void ptt_task(void *arg)
{
    (void)arg;
    const esp_codec_dev_sample_info_t fmt = {.bits_per_sample = 16, .channel = 1, .sample_rate = RATE};
    for (;;) {
        while (gpio_get_level(s.io->ptt) != 0) {
            vTaskDelay(pdMS_TO_TICKS(20));
        }
        size_t n = 0;
        if (esp_codec_dev_open(s.io->mic, &fmt) != ESP_CODEC_DEV_OK) {
            ESP_LOGE(TAG, "microphone open failed");
            vTaskDelay(pdMS_TO_TICKS(500));
            continue;
        }
        esp_codec_dev_set_in_gain(s.io->mic, 30.0);
        while (gpio_get_level(s.io->ptt) == 0) {
            if (n + FRAME_SAMPLES <= s.cap) {
                if (esp_codec_dev_read(s.io->mic, s.buf + n, FRAME_SAMPLES * sizeof(int16_t)) == ESP_CODEC_DEV_OK) {
                    n += FRAME_SAMPLES;
                }
            } else {
                vTaskDelay(pdMS_TO_TICKS(20)); /* full: the rest of the press is cut */
            }
        }
        esp_codec_dev_close(s.io->mic);
        if (n > 0 && s.cb != NULL) {
            s.cb(s.buf, n, s.ctx);
        }
    }
}

esp_err_t audio_start(const board_io_t *io, int max_seconds, audio_utterance_cb on_utterance, void *ctx)
{
    s.io = io;
    s.cb = on_utterance;
    s.ctx = ctx;
    s.cap = (size_t)RATE * (size_t)max_seconds;
    s.buf = heap_caps_malloc(s.cap * sizeof(int16_t), MALLOC_CAP_SPIRAM);
    ESP_RETURN_ON_FALSE(s.buf != NULL, ESP_ERR_NO_MEM, TAG, "no PSRAM for %d s of audio", max_seconds);
    return xTaskCreate(ptt_task, "ptt", 4096, NULL, 5, NULL) == pdPASS ? ESP_OK : ESP_FAIL;
}

esp_err_t audio_play(const int16_t *pcm, size_t samples)
{
    const esp_codec_dev_sample_info_t fmt = {.bits_per_sample = 16, .channel = 1, .sample_rate = RATE};
    if (esp_codec_dev_open(s.io->speaker, &fmt) != ESP_CODEC_DEV_OK) {
        return ESP_FAIL;
    }
    esp_codec_dev_set_out_vol(s.io->speaker, 70);
    const int rc = esp_codec_dev_write(s.io->speaker, (void *)pcm, (int)(samples * sizeof(int16_t)));
    esp_codec_dev_close(s.io->speaker);
    return rc == ESP_CODEC_DEV_OK ? ESP_OK : ESP_FAIL;
}
