/* The core's test runner (Unity). One line per test ("file:line:name:PASS|FAIL..."), read by
 * pytest (tests/firmware/); the exit code is the number of failures. */
#include "unity.h"

#define TESTS(X)                                              \
    X(test_json_valid_documents)                              \
    X(test_json_depth_limit_matches_gateway)                  \
    X(test_json_size_and_token_limits)                        \
    X(test_json_rejects_malformed)                            \
    X(test_json_strings_unescape_to_utf8)                     \
    X(test_json_integers_bounded)                             \
    X(test_json_writer_matches_python_compact)                \
    X(test_base64_roundtrip_and_strict)                       \
    X(test_frames_from_the_gateway_decode)                    \
    X(test_frames_every_truncation_is_refused_cleanly)        \
    X(test_frames_refuse_bad_shapes)                          \
    X(test_frames_random_mutations_never_crash)               \
    X(test_encoders_write_what_the_gateway_accepts)           \
    X(test_sha256_matches_hashlib)                            \
    X(test_seq_classify_and_persist)                          \
    X(test_ring_order_ack_and_reboot)                         \
    X(test_ring_full_drops_oldest_and_counts)                 \
    X(test_ring_power_loss_between_slot_and_header)           \
    X(test_slots_stage_test_and_mark_valid)                   \
    X(test_slots_roll_back_after_n_bad_boots)                 \
    X(test_manifests_signed_by_python_verify_in_c)            \
    X(test_ota_check_board_versions_size)                     \
    X(test_ota_streams_verifies_and_stages)                   \
    X(test_ota_refuses_corrupt_short_and_long_images)         \
    X(test_pairing_steps)                                     \
    X(test_pairing_errors_and_expiry)                         \
    X(test_state_machine_table)                               \
    X(test_device_pairs_then_sessions_events_once_in_order)   \
    X(test_device_offline_queue_flushes_after_reconnect_and_reboot) \
    X(test_device_bad_frames_change_nothing)                  \
    X(test_device_ota_install_self_test_and_rollback)         \
    X(test_device_model_ota_self_test_passes)

#define DECLARE(name) void name(void);
TESTS(DECLARE)

int main(void) {
    UNITY_BEGIN();
#define RUN(name) RUN_TEST(name);
    TESTS(RUN)
    return UNITY_END();
}
