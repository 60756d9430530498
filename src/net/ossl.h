// SPDX-License-Identifier: Apache-2.0
// OpenSSL (libssl and libcrypto 3), loaded at run time. The binary does not link OpenSSL: a role
// or proxy without TLS never maps it (1.5 to 2 MiB of resident memory), and the first TLS
// context, certificate store or libcrypto user loads it with sc_lazylib_ssl_load (core/lazylib.h).
//
// How it works: a file that calls OpenSSL includes this header instead of <openssl/...> (it
// includes those itself, and must come after any other header that includes OpenSSL's). Every
// OpenSSL function the code calls is redefined below as SC_OSSL(name): a call through a
// pointer that each call site resolves once (dlsym, then one load and a well-predicted branch
// per call), typed from OpenSSL's own declaration. OpenSSL's function-like macros
// (SSL_CTX_set_mode, sk_X509_num, OPENSSL_free, ...) expand to the functions listed here and so
// go through the same pointers.
//
// Adding a function: one line, `#define NAME SC_OSSL(NAME)`, in alphabetical order (and the
// OpenSSL header that declares it in the include list if it is not there yet). A function called
// but not listed here is a link error ("undefined reference to NAME"), since nothing links
// OpenSSL. Callers must have loaded the library first (sc_lazylib_ssl_load) when they want a
// clean error: a call before that loads it, and ends the process with a logged reason if it
// cannot be loaded.
#ifndef SC_NET_OSSL_H
#define SC_NET_OSSL_H

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/lazylib.h"

/* The function <f> of OpenSSL, resolved on its first call from this call site. */
#define SC_OSSL(f)                                                                                 \
    (*({                                                                                           \
        static void *sc_ossl_fn_;                                                                  \
        void *sc_ossl_p_ = __atomic_load_n(&sc_ossl_fn_, __ATOMIC_ACQUIRE);                        \
        if (__builtin_expect(sc_ossl_p_ == NULL, 0)) {                                             \
            sc_ossl_p_ = sc_lazylib_ssl_resolve(&sc_ossl_fn_, #f);                                 \
        }                                                                                          \
        (__typeof__(&f))sc_ossl_p_;                                                                \
    }))

// clang-format off
#define ASN1_INTEGER_to_BN SC_OSSL(ASN1_INTEGER_to_BN)
#define ASN1_STRING_get0_data SC_OSSL(ASN1_STRING_get0_data)
#define ASN1_STRING_length SC_OSSL(ASN1_STRING_length)
#define ASN1_TIME_to_tm SC_OSSL(ASN1_TIME_to_tm)
#define BIO_clear_flags SC_OSSL(BIO_clear_flags)
#define BIO_ctrl SC_OSSL(BIO_ctrl)
#define BIO_free SC_OSSL(BIO_free)
#define BIO_get_data SC_OSSL(BIO_get_data)
#define BIO_get_new_index SC_OSSL(BIO_get_new_index)
#define BIO_meth_new SC_OSSL(BIO_meth_new)
#define BIO_method_type SC_OSSL(BIO_method_type)
#define BIO_meth_set_create SC_OSSL(BIO_meth_set_create)
#define BIO_meth_set_ctrl SC_OSSL(BIO_meth_set_ctrl)
#define BIO_meth_set_read SC_OSSL(BIO_meth_set_read)
#define BIO_meth_set_write SC_OSSL(BIO_meth_set_write)
#define BIO_new SC_OSSL(BIO_new)
#define BIO_s_mem SC_OSSL(BIO_s_mem)
#define BIO_set_data SC_OSSL(BIO_set_data)
#define BIO_set_flags SC_OSSL(BIO_set_flags)
#define BIO_set_init SC_OSSL(BIO_set_init)
#define BIO_write SC_OSSL(BIO_write)
#define BN_bin2bn SC_OSSL(BN_bin2bn)
#define BN_bn2hex SC_OSSL(BN_bn2hex)
#define BN_free SC_OSSL(BN_free)
#define CRYPTO_free SC_OSSL(CRYPTO_free)
#define CRYPTO_get_ex_new_index SC_OSSL(CRYPTO_get_ex_new_index)
#define CRYPTO_zalloc SC_OSSL(CRYPTO_zalloc)
#define ECDSA_SIG_free SC_OSSL(ECDSA_SIG_free)
#define ECDSA_SIG_new SC_OSSL(ECDSA_SIG_new)
#define ECDSA_SIG_set0 SC_OSSL(ECDSA_SIG_set0)
#define ERR_clear_error SC_OSSL(ERR_clear_error)
#define ERR_peek_error SC_OSSL(ERR_peek_error)
#define ERR_peek_last_error SC_OSSL(ERR_peek_last_error)
#define ERR_reason_error_string SC_OSSL(ERR_reason_error_string)
#define EVP_aes_256_cbc SC_OSSL(EVP_aes_256_cbc)
#define EVP_aes_256_gcm SC_OSSL(EVP_aes_256_gcm)
#define EVP_CIPHER_CTX_ctrl SC_OSSL(EVP_CIPHER_CTX_ctrl)
#define EVP_CIPHER_CTX_free SC_OSSL(EVP_CIPHER_CTX_free)
#define EVP_CIPHER_CTX_new SC_OSSL(EVP_CIPHER_CTX_new)
#define EVP_CIPHER_fetch SC_OSSL(EVP_CIPHER_fetch)
#define EVP_CIPHER_free SC_OSSL(EVP_CIPHER_free)
#define EVP_DecryptFinal_ex SC_OSSL(EVP_DecryptFinal_ex)
#define EVP_DecryptInit_ex SC_OSSL(EVP_DecryptInit_ex)
#define EVP_DecryptInit_ex2 SC_OSSL(EVP_DecryptInit_ex2)
#define EVP_DecryptUpdate SC_OSSL(EVP_DecryptUpdate)
#define EVP_Digest SC_OSSL(EVP_Digest)
#define EVP_DigestFinal_ex SC_OSSL(EVP_DigestFinal_ex)
#define EVP_DigestInit_ex SC_OSSL(EVP_DigestInit_ex)
#define EVP_DigestUpdate SC_OSSL(EVP_DigestUpdate)
#define EVP_DigestVerify SC_OSSL(EVP_DigestVerify)
#define EVP_DigestVerifyInit SC_OSSL(EVP_DigestVerifyInit)
#define EVP_EncryptFinal_ex SC_OSSL(EVP_EncryptFinal_ex)
#define EVP_EncryptInit_ex SC_OSSL(EVP_EncryptInit_ex)
#define EVP_EncryptUpdate SC_OSSL(EVP_EncryptUpdate)
#define EVP_MAC_CTX_set_params SC_OSSL(EVP_MAC_CTX_set_params)
#define EVP_MD_CTX_free SC_OSSL(EVP_MD_CTX_free)
#define EVP_MD_CTX_new SC_OSSL(EVP_MD_CTX_new)
#define EVP_MD_fetch SC_OSSL(EVP_MD_fetch)
#define EVP_PKEY_CTX_free SC_OSSL(EVP_PKEY_CTX_free)
#define EVP_PKEY_CTX_new_from_name SC_OSSL(EVP_PKEY_CTX_new_from_name)
#define EVP_PKEY_CTX_set_rsa_mgf1_md SC_OSSL(EVP_PKEY_CTX_set_rsa_mgf1_md)
#define EVP_PKEY_CTX_set_rsa_padding SC_OSSL(EVP_PKEY_CTX_set_rsa_padding)
#define EVP_PKEY_CTX_set_rsa_pss_saltlen SC_OSSL(EVP_PKEY_CTX_set_rsa_pss_saltlen)
#define EVP_PKEY_free SC_OSSL(EVP_PKEY_free)
#define EVP_PKEY_fromdata SC_OSSL(EVP_PKEY_fromdata)
#define EVP_PKEY_fromdata_init SC_OSSL(EVP_PKEY_fromdata_init)
#define EVP_PKEY_get_bits SC_OSSL(EVP_PKEY_get_bits)
#define EVP_PKEY_new_raw_public_key SC_OSSL(EVP_PKEY_new_raw_public_key)
#define EVP_sha256 SC_OSSL(EVP_sha256)
#define EVP_sha384 SC_OSSL(EVP_sha384)
#define EVP_sha512 SC_OSSL(EVP_sha512)
#define GENERAL_NAMES_free SC_OSSL(GENERAL_NAMES_free)
#define i2d_ECDSA_SIG SC_OSSL(i2d_ECDSA_SIG)
#define OPENSSL_cleanse SC_OSSL(OPENSSL_cleanse)
#define OPENSSL_sk_new_null SC_OSSL(OPENSSL_sk_new_null)
#define OPENSSL_sk_num SC_OSSL(OPENSSL_sk_num)
#define OPENSSL_sk_pop_free SC_OSSL(OPENSSL_sk_pop_free)
#define OPENSSL_sk_push SC_OSSL(OPENSSL_sk_push)
#define OPENSSL_sk_value SC_OSSL(OPENSSL_sk_value)
#define OSSL_PARAM_BLD_free SC_OSSL(OSSL_PARAM_BLD_free)
#define OSSL_PARAM_BLD_new SC_OSSL(OSSL_PARAM_BLD_new)
#define OSSL_PARAM_BLD_push_BN SC_OSSL(OSSL_PARAM_BLD_push_BN)
#define OSSL_PARAM_BLD_push_octet_string SC_OSSL(OSSL_PARAM_BLD_push_octet_string)
#define OSSL_PARAM_BLD_push_utf8_string SC_OSSL(OSSL_PARAM_BLD_push_utf8_string)
#define OSSL_PARAM_BLD_to_param SC_OSSL(OSSL_PARAM_BLD_to_param)
#define OSSL_PARAM_construct_end SC_OSSL(OSSL_PARAM_construct_end)
#define OSSL_PARAM_construct_int SC_OSSL(OSSL_PARAM_construct_int)
#define OSSL_PARAM_construct_octet_string SC_OSSL(OSSL_PARAM_construct_octet_string)
#define OSSL_PARAM_construct_utf8_string SC_OSSL(OSSL_PARAM_construct_utf8_string)
#define OSSL_PARAM_free SC_OSSL(OSSL_PARAM_free)
#define PEM_read_bio_PrivateKey SC_OSSL(PEM_read_bio_PrivateKey)
#define PEM_read_bio_X509 SC_OSSL(PEM_read_bio_X509)
#define PEM_read_bio_X509_AUX SC_OSSL(PEM_read_bio_X509_AUX)
#define RAND_bytes SC_OSSL(RAND_bytes)
#define SSL_CIPHER_get_protocol_id SC_OSSL(SSL_CIPHER_get_protocol_id)
#define SSL_CIPHER_standard_name SC_OSSL(SSL_CIPHER_standard_name)
#define SSL_ctrl SC_OSSL(SSL_ctrl)
#define SSL_CTX_callback_ctrl SC_OSSL(SSL_CTX_callback_ctrl)
#define SSL_CTX_ctrl SC_OSSL(SSL_CTX_ctrl)
#define SSL_CTX_free SC_OSSL(SSL_CTX_free)
#define SSL_CTX_get0_certificate SC_OSSL(SSL_CTX_get0_certificate)
#define SSL_CTX_get_ex_data SC_OSSL(SSL_CTX_get_ex_data)
#define SSL_CTX_get_verify_mode SC_OSSL(SSL_CTX_get_verify_mode)
#define SSL_CTX_new SC_OSSL(SSL_CTX_new)
#define SSL_CTX_sess_set_new_cb SC_OSSL(SSL_CTX_sess_set_new_cb)
#define SSL_CTX_set0_CA_list SC_OSSL(SSL_CTX_set0_CA_list)
#define SSL_CTX_set1_cert_store SC_OSSL(SSL_CTX_set1_cert_store)
#define SSL_CTX_set_alpn_protos SC_OSSL(SSL_CTX_set_alpn_protos)
#define SSL_CTX_set_alpn_select_cb SC_OSSL(SSL_CTX_set_alpn_select_cb)
#define SSL_CTX_set_cipher_list SC_OSSL(SSL_CTX_set_cipher_list)
#define SSL_CTX_set_ciphersuites SC_OSSL(SSL_CTX_set_ciphersuites)
#define SSL_CTX_set_default_verify_paths SC_OSSL(SSL_CTX_set_default_verify_paths)
#define SSL_CTX_set_ex_data SC_OSSL(SSL_CTX_set_ex_data)
#define SSL_CTX_set_keylog_callback SC_OSSL(SSL_CTX_set_keylog_callback)
#define SSL_CTX_set_num_tickets SC_OSSL(SSL_CTX_set_num_tickets)
#define SSL_CTX_set_options SC_OSSL(SSL_CTX_set_options)
#define SSL_CTX_set_session_id_context SC_OSSL(SSL_CTX_set_session_id_context)
#define SSL_CTX_set_timeout SC_OSSL(SSL_CTX_set_timeout)
#define SSL_CTX_set_tlsext_ticket_key_evp_cb SC_OSSL(SSL_CTX_set_tlsext_ticket_key_evp_cb)
#define SSL_CTX_set_verify SC_OSSL(SSL_CTX_set_verify)
#define SSL_CTX_set_verify_depth SC_OSSL(SSL_CTX_set_verify_depth)
#define SSL_CTX_use_certificate SC_OSSL(SSL_CTX_use_certificate)
#define SSL_CTX_use_PrivateKey SC_OSSL(SSL_CTX_use_PrivateKey)
#define SSL_do_handshake SC_OSSL(SSL_do_handshake)
#define SSL_dup_CA_list SC_OSSL(SSL_dup_CA_list)
#define SSL_free SC_OSSL(SSL_free)
#define SSL_get0_alpn_selected SC_OSSL(SSL_get0_alpn_selected)
#define SSL_get0_param SC_OSSL(SSL_get0_param)
#define SSL_get0_peer_certificate SC_OSSL(SSL_get0_peer_certificate)
#define SSL_get1_peer_certificate SC_OSSL(SSL_get1_peer_certificate)
#define SSL_get_certificate SC_OSSL(SSL_get_certificate)
#define SSL_get_current_cipher SC_OSSL(SSL_get_current_cipher)
#define SSL_get_error SC_OSSL(SSL_get_error)
#define SSL_get_ex_data SC_OSSL(SSL_get_ex_data)
#define SSL_get_ex_data_X509_STORE_CTX_idx SC_OSSL(SSL_get_ex_data_X509_STORE_CTX_idx)
#define SSL_get_rbio SC_OSSL(SSL_get_rbio)
#define SSL_get_servername SC_OSSL(SSL_get_servername)
#define SSL_get_shutdown SC_OSSL(SSL_get_shutdown)
#define SSL_get_SSL_CTX SC_OSSL(SSL_get_SSL_CTX)
#define SSL_get_verify_mode SC_OSSL(SSL_get_verify_mode)
#define SSL_get_verify_result SC_OSSL(SSL_get_verify_result)
#define SSL_get_version SC_OSSL(SSL_get_version)
#define SSL_has_pending SC_OSSL(SSL_has_pending)
#define SSL_new SC_OSSL(SSL_new)
#define SSL_pending SC_OSSL(SSL_pending)
#define SSL_read_ex SC_OSSL(SSL_read_ex)
#define SSL_SESSION_free SC_OSSL(SSL_SESSION_free)
#define SSL_SESSION_is_resumable SC_OSSL(SSL_SESSION_is_resumable)
#define SSL_session_reused SC_OSSL(SSL_session_reused)
#define SSL_SESSION_up_ref SC_OSSL(SSL_SESSION_up_ref)
#define SSL_set1_host SC_OSSL(SSL_set1_host)
#define SSL_set_accept_state SC_OSSL(SSL_set_accept_state)
#define SSL_set_alpn_protos SC_OSSL(SSL_set_alpn_protos)
#define SSL_set_bio SC_OSSL(SSL_set_bio)
#define SSL_set_connect_state SC_OSSL(SSL_set_connect_state)
#define SSL_set_ex_data SC_OSSL(SSL_set_ex_data)
#define SSL_set_msg_callback SC_OSSL(SSL_set_msg_callback)
#define SSL_set_session SC_OSSL(SSL_set_session)
#define SSL_set_shutdown SC_OSSL(SSL_set_shutdown)
#define SSL_set_verify SC_OSSL(SSL_set_verify)
#define SSL_set_SSL_CTX SC_OSSL(SSL_set_SSL_CTX)
#define SSL_shutdown SC_OSSL(SSL_shutdown)
#define SSL_version SC_OSSL(SSL_version)
#define SSL_write_ex SC_OSSL(SSL_write_ex)
#define TLS_client_method SC_OSSL(TLS_client_method)
#define TLS_server_method SC_OSSL(TLS_server_method)
#define X509_check_host SC_OSSL(X509_check_host)
#define X509_check_private_key SC_OSSL(X509_check_private_key)
#define X509_digest SC_OSSL(X509_digest)
#define X509_free SC_OSSL(X509_free)
#define X509_get0_notAfter SC_OSSL(X509_get0_notAfter)
#define X509_get0_notBefore SC_OSSL(X509_get0_notBefore)
#define X509_get0_serialNumber SC_OSSL(X509_get0_serialNumber)
#define X509_get_ext_d2i SC_OSSL(X509_get_ext_d2i)
#define X509_get_subject_name SC_OSSL(X509_get_subject_name)
#define X509_NAME_dup SC_OSSL(X509_NAME_dup)
#define X509_NAME_free SC_OSSL(X509_NAME_free)
#define X509_NAME_get_text_by_NID SC_OSSL(X509_NAME_get_text_by_NID)
#define X509_NAME_print_ex SC_OSSL(X509_NAME_print_ex)
#define X509_STORE_add_cert SC_OSSL(X509_STORE_add_cert)
#define X509_STORE_CTX_get_current_cert SC_OSSL(X509_STORE_CTX_get_current_cert)
#define X509_STORE_CTX_get_error_depth SC_OSSL(X509_STORE_CTX_get_error_depth)
#define X509_STORE_CTX_get_ex_data SC_OSSL(X509_STORE_CTX_get_ex_data)
#define X509_STORE_CTX_set_error SC_OSSL(X509_STORE_CTX_set_error)
#define X509_STORE_free SC_OSSL(X509_STORE_free)
#define X509_STORE_new SC_OSSL(X509_STORE_new)
#define X509_verify_cert_error_string SC_OSSL(X509_verify_cert_error_string)
#define X509_VERIFY_PARAM_set1_ip_asc SC_OSSL(X509_VERIFY_PARAM_set1_ip_asc)
// clang-format on

#endif
