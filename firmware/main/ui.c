/*
 * The status screen on LVGL 9 through esp_lvgl_port (its task, its lock).
 */
#include "ui.h"

#include "esp_check.h"
#include "esp_log.h"
#include "esp_lvgl_port.h"
#include "lvgl.h"

static const char *TAG = "ui";
static lv_obj_t *s_state, *s_code, *s_conn, *s_msg, *s_bar;

static lv_obj_t *label(lv_obj_t *parent, const lv_font_t *font, lv_align_t align, int y)
{
    lv_obj_t *l = lv_label_create(parent);
    lv_obj_set_style_text_font(l, font, 0);
    lv_obj_align(l, align, 0, y);
    lv_label_set_text(l, "");
    return l;
}

esp_err_t ui_start(const board_io_t *io, const char *device_id)
{
    const lvgl_port_cfg_t port = ESP_LVGL_PORT_INIT_CONFIG();
    ESP_RETURN_ON_ERROR(lvgl_port_init(&port), TAG, "lvgl port");
    const lvgl_port_display_cfg_t disp = {
        .io_handle = io->lcd_io,
        .panel_handle = io->lcd_panel,
        .buffer_size = io->lcd_width * 40,
        .double_buffer = true,
        .hres = io->lcd_width,
        .vres = io->lcd_height,
        .rotation = {.mirror_x = io->lcd_mirror_x, .mirror_y = io->lcd_mirror_y},
        .color_format = LV_COLOR_FORMAT_RGB565,
        .flags = {.buff_dma = true, .swap_bytes = true},
    };
    if (lvgl_port_add_disp(&disp) == NULL) {
        return ESP_FAIL;
    }
    lvgl_port_lock(0);
    lv_obj_t *screen = lv_screen_active();
    lv_obj_t *title = label(screen, &lv_font_montserrat_14, LV_ALIGN_TOP_LEFT, 4);
    lv_label_set_text_fmt(title, "MicroClaw  %s", device_id);
    s_state = label(screen, &lv_font_montserrat_14, LV_ALIGN_TOP_RIGHT, 4);
    s_code = label(screen, &lv_font_montserrat_24, LV_ALIGN_CENTER, -40);
    s_conn = label(screen, &lv_font_montserrat_14, LV_ALIGN_TOP_LEFT, 26);
    s_msg = label(screen, &lv_font_montserrat_14, LV_ALIGN_CENTER, 20);
    lv_label_set_long_mode(s_msg, LV_LABEL_LONG_WRAP);
    lv_obj_set_width(s_msg, io->lcd_width - 16);
    s_bar = lv_bar_create(screen);
    lv_obj_set_size(s_bar, io->lcd_width - 40, 14);
    lv_obj_align(s_bar, LV_ALIGN_BOTTOM_MID, 0, -10);
    lv_bar_set_range(s_bar, 0, 100);
    lv_obj_add_flag(s_bar, LV_OBJ_FLAG_HIDDEN);
    lvgl_port_unlock();
    return ESP_OK;
}

static void set(lv_obj_t *l, const char *text)
{
    if (l != NULL && lvgl_port_lock(100)) {
        lv_label_set_text(l, text ? text : "");
        lvgl_port_unlock();
    }
}

void ui_set_state(const char *state) { set(s_state, state); }
void ui_set_connection(const char *text) { set(s_conn, text); }
void ui_set_last_message(const char *text) { set(s_msg, text); }

void ui_set_pairing_code(const char *code)
{
    if (code == NULL || code[0] == '\0') {
        set(s_code, "");
        return;
    }
    if (s_code != NULL && lvgl_port_lock(100)) {
        lv_label_set_text_fmt(s_code, "Pair: %s\nmicroclaw device claim %s", code, code);
        lvgl_port_unlock();
    }
}

void ui_set_ota_progress(int percent)
{
    if (s_bar == NULL || !lvgl_port_lock(100)) {
        return;
    }
    if (percent < 0) {
        lv_obj_add_flag(s_bar, LV_OBJ_FLAG_HIDDEN);
    } else {
        lv_obj_clear_flag(s_bar, LV_OBJ_FLAG_HIDDEN);
        lv_bar_set_value(s_bar, percent > 100 ? 100 : percent, LV_ANIM_OFF);
    }
    lvgl_port_unlock();
}
