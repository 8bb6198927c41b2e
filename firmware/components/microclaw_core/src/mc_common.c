/* Error names (mc_strerror). */
#include "mc_common.h"

const char *mc_strerror(int err) {
    switch (err) {
    case MC_OK: return "ok";
    case MC_ERR_ARG: return "arg";
    case MC_ERR_NOSPACE: return "nospace";
    case MC_ERR_JSON: return "json";
    case MC_ERR_DEPTH: return "depth";
    case MC_ERR_TOO_BIG: return "too_big";
    case MC_ERR_FIELD: return "field";
    case MC_ERR_NOT_FOUND: return "not_found";
    case MC_ERR_IO: return "io";
    case MC_ERR_STATE: return "state";
    case MC_ERR_SIGNATURE: return "signature";
    case MC_ERR_HASH: return "hash";
    case MC_ERR_SIZE: return "size";
    case MC_ERR_BOARD: return "board";
    case MC_ERR_VERSION: return "version";
    case MC_ERR_CANONICAL: return "canonical";
    case MC_ERR_CORRUPT: return "corrupt";
    case MC_ERR_REFUSED: return "refused";
    default: return "unknown";
    }
}
