/*
 * Push-to-talk capture and playback through esp_codec_dev (see audio.h).
 */
#include "audio.h"

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
    volatile size_t have;
    volatile bool capturing;
    bool playing;
    audio_ptt_cb cb;
    void *ctx;
} s;

static const esp_codec_dev_sample_info_t FMT = {.bits_per_sample = 16, .channel = 1, .sample_rate = RATE};

static void button_task(void *arg)
{
    (void)arg;
    bool was_down = false;
    for (;;) {
        const bool down = gpio_get_level(s.io->ptt) == 0;
        if (down != was_down) {
            was_down = down;
            s.cb(down, s.ctx);
        }
        if (s.capturing && s.have + FRAME_SAMPLES <= s.cap) {
            if (esp_codec_dev_read(s.io->mic, s.buf + s.have, FRAME_SAMPLES * sizeof(int16_t)) == ESP_CODEC_DEV_OK) {
                s.have += FRAME_SAMPLES;
            }
        } else {
            vTaskDelay(pdMS_TO_TICKS(20));
        }
    }
}

esp_err_t audio_start(const board_io_t *io, int max_seconds, audio_ptt_cb on_ptt, void *ctx)
{
    s.io = io;
    s.cb = on_ptt;
    s.ctx = ctx;
    s.cap = (size_t)RATE * (size_t)max_seconds;
    s.buf = heap_caps_malloc(s.cap * sizeof(int16_t), MALLOC_CAP_SPIRAM);
    ESP_RETURN_ON_FALSE(s.buf != NULL, ESP_ERR_NO_MEM, TAG, "no PSRAM for %d s of audio", max_seconds);
    return xTaskCreate(button_task, "ptt", 4096, NULL, 5, NULL) == pdPASS ? ESP_OK : ESP_FAIL;
}

esp_err_t audio_capture(bool on)
{
    if (on == s.capturing) {
        return ESP_OK;
    }
    if (on) {
        ESP_RETURN_ON_FALSE(esp_codec_dev_open(s.io->mic, &FMT) == ESP_CODEC_DEV_OK, ESP_FAIL, TAG, "mic open");
        esp_codec_dev_set_in_gain(s.io->mic, 30.0);
        s.have = 0;
        s.capturing = true;
    } else {
        s.capturing = false;
        vTaskDelay(pdMS_TO_TICKS(30)); /* let the button task finish its read */
        esp_codec_dev_close(s.io->mic);
    }
    return ESP_OK;
}

const int16_t *audio_captured(size_t *samples)
{
    *samples = s.have;
    return s.buf;
}

esp_err_t audio_play(bool on)
{
    if (on == s.playing) {
        return ESP_OK;
    }
    if (on) {
        ESP_RETURN_ON_FALSE(esp_codec_dev_open(s.io->speaker, &FMT) == ESP_CODEC_DEV_OK, ESP_FAIL, TAG, "spk open");
        esp_codec_dev_set_out_vol(s.io->speaker, 70);
    } else {
        esp_codec_dev_close(s.io->speaker);
    }
    s.playing = on;
    return ESP_OK;
}

esp_err_t audio_write(const uint8_t *pcm, size_t len)
{
    if (!s.playing) {
        return ESP_ERR_INVALID_STATE;
    }
    return esp_codec_dev_write(s.io->speaker, (void *)pcm, (int)len) == ESP_CODEC_DEV_OK ? ESP_OK : ESP_FAIL;
}
