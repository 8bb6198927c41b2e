/*
 * Push-to-talk and audio through esp_codec_dev: a task watches the button and reports presses;
 * capture runs while the core says so (MC_AUDIO_CAPTURE_START..STOP) into a bounded PSRAM
 * buffer; playback writes PCM the core hands over. 16-bit mono at CONFIG_MICROCLAW_AUDIO_SAMPLE_RATE.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "board.h"

typedef void (*audio_ptt_cb)(bool down, void *ctx);

/* Starts the button task; at most `max_seconds` of audio are kept per capture (the rest is cut). */
esp_err_t audio_start(const board_io_t *io, int max_seconds, audio_ptt_cb on_ptt, void *ctx);
esp_err_t audio_capture(bool on);
/* The last capture (valid until the next audio_capture(true)). */
const int16_t *audio_captured(size_t *samples);
esp_err_t audio_play(bool on);
esp_err_t audio_write(const uint8_t *pcm, size_t len);
