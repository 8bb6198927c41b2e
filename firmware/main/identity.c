/*
 * Key generation and the CSR (see identity.h).
 */
#include "identity.h"

#include <stdio.h>
#include <string.h>

#include "mbedtls/ctr_drbg.h"
#include "mbedtls/ecp.h"
#include "mbedtls/entropy.h"
#include "mbedtls/pk.h"
#include "mbedtls/x509_csr.h"

esp_err_t identity_make_csr(const char *device_id, const char *key_pem_in, char *key_pem_out, size_t key_cap,
                            char *csr_pem, size_t csr_cap)
{
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    mbedtls_x509write_csr req;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&key);
    mbedtls_x509write_csr_init(&req);
    char subject[64];
    snprintf(subject, sizeof subject, "CN=%s", device_id);
    static const char pers[] = "microclaw-identity";
    int rc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
                                   sizeof pers - 1);
    if (rc == 0 && key_pem_in != NULL) {
        rc = mbedtls_pk_parse_key(&key, (const unsigned char *)key_pem_in, strlen(key_pem_in) + 1, NULL, 0,
                                  mbedtls_ctr_drbg_random, &drbg);
    } else if (rc == 0) {
        rc = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
        if (rc == 0) {
            rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random, &drbg);
        }
    }
    if (rc == 0) rc = mbedtls_pk_write_key_pem(&key, (unsigned char *)key_pem_out, key_cap);
    if (rc == 0) {
        mbedtls_x509write_csr_set_md_alg(&req, MBEDTLS_MD_SHA256);
        mbedtls_x509write_csr_set_key(&req, &key);
        rc = mbedtls_x509write_csr_set_subject_name(&req, subject);
    }
    if (rc == 0) {
        rc = mbedtls_x509write_csr_pem(&req, (unsigned char *)csr_pem, csr_cap, mbedtls_ctr_drbg_random, &drbg);
    }
    mbedtls_x509write_csr_free(&req);
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return rc == 0 ? ESP_OK : ESP_FAIL;
}
