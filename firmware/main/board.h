/*
 * The board interface: everything the app needs from one piece of hardware, so a second board is
 * a second board_*.c and a Kconfig choice, not edits across the app. Implementations fill a
 * board_io_t with ready handles (panel, codecs, the push-to-talk button) and name the board as OTA
 * manifests do.
 */
#pragma once

#include <stdbool.h>

#include "driver/gpio.h"
#include "esp_codec_dev.h"
#include "esp_err.h"
#include "esp_lcd_panel_io.h"
#include "esp_lcd_panel_ops.h"

typedef struct {
    esp_lcd_panel_io_handle_t lcd_io;
    esp_lcd_panel_handle_t lcd_panel;
    int lcd_width;
    int lcd_height;
    bool lcd_mirror_x;
    bool lcd_mirror_y;
    esp_codec_dev_handle_t speaker; /* output: opened by audio.c at the sample rate it needs */
    esp_codec_dev_handle_t mic;     /* input */
    gpio_num_t ptt;                 /* push-to-talk, active low, pulled up */
} board_io_t;

typedef struct {
    const char *name; /* the `board` of OTA manifests and of the factory NVS image */
    esp_err_t (*init)(board_io_t *out);
    void (*backlight)(bool on);
} board_t;

/* The board chosen in menuconfig (Kconfig MICROCLAW_BOARD). */
const board_t *board_get(void);
