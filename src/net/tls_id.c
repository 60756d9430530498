// SPDX-License-Identifier: Apache-2.0
// Peer identity from certificates and first-bytes protocol sniffing (see tls.h): pure functions
// over untrusted input (a peer's certificate, a connection's first bytes), so each one validates
// everything it reads, writes only into the caller's capped buffer and is fuzzed.
#include "net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/error.h"

/* ---- SPIFFE IDs --------------------------------------------------------------------------- */

static bool td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int sc_tls_spiffe_parse(struct sc_str id, struct sc_spiffe_id *out)
{
    static const struct sc_str scheme = SC_STR("spiffe://");
    memset(out, 0, sizeof(*out));
    if (!id.p || id.len > SC_SPIFFE_ID_MAX || !sc_str_startswith(id, scheme)) {
        return -EINVAL;
    }
    const char *p = id.p + scheme.len;
    const char *end = id.p + id.len;
    const char *td = p;
    while (p < end && *p != '/') {
        if (!td_char((unsigned char)*p)) {
            return -EINVAL; /* upper case, ':' (port), '@' (user info), '?', '#', ... */
        }
        p++;
    }
    if (p == td || p - td > 255) {
        return -EINVAL;
    }
    const char *path = p;
    /* Segments: "/" followed by one or more path characters, neither "." nor "..". */
    struct sc_str seg[4];
    size_t nseg = 0;
    while (p < end) {
        p++; /* the '/' */
        const char *s = p;
        while (p < end && *p != '/') {
            if (!path_char((unsigned char)*p)) {
                return -EINVAL;
            }
            p++;
        }
        size_t len = (size_t)(p - s);
        if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
            return -EINVAL; /* empty segment (also a trailing slash), "." or ".." */
        }
        if (nseg < SC_ARRAY_LEN(seg)) {
            seg[nseg] = sc_str_n(s, len);
        }
        nseg++;
    }
    out->trust_domain = sc_str_n(td, (size_t)(path - td));
    out->path = sc_str_n(path, (size_t)(end - path));
    out->principal = sc_str_n(td, (size_t)(end - td));
    if (nseg == 4 && sc_str_eq(seg[0], SC_STR("ns")) && sc_str_eq(seg[2], SC_STR("sa"))) {
        out->ns = seg[1];
        out->sa = seg[3];
    }
    return 0;
}

/* Returns the URI SANs of <cert> (NULL when none). Free with GENERAL_NAMES_free. */
static GENERAL_NAMES *sans_of(X509 *cert)
{
    return X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
}

int sc_tls_spiffe_id(struct x509_st *cert, char *out, size_t cap)
{
    if (cap > 0) {
        out[0] = '\0';
    }
    GENERAL_NAMES *names = sans_of(cert);
    const ASN1_IA5STRING *uri = NULL;
    int count = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI) {
            uri = g->d.uniformResourceIdentifier;
            count++;
        }
    }
    int rc;
    if (count != 1) {
        rc = -ENOENT;
        goto out;
    }
    struct sc_str s =
        sc_str_n((const char *)ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri));
    struct sc_spiffe_id id;
    if (memchr(s.p, '\0', s.len) || sc_tls_spiffe_parse(s, &id) < 0) {
        rc = -EINVAL;
        goto out;
    }
    if (s.len + 1 > cap) {
        rc = SC_ETOOBIG;
        goto out;
    }
    memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    rc = (int)s.len;
out:
    GENERAL_NAMES_free(names);
    return rc;
}

/* ---- X-Forwarded-Client-Cert --------------------------------------------------------------- */

struct wbuf {
    char *p;
    size_t len, cap;
    bool over;
};

static void put(struct wbuf *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->len - 1) {
        w->over = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* Whether <v> can go into a header value as it is: printable ASCII without spaces. A SAN holding
 * anything else (a NUL, CR/LF, bytes above 0x7e) is left out of the element rather than passed
 * to the application in a header. */
static bool header_safe(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f) {
            return false;
        }
    }
    return n > 0;
}

/* Appends "key=value", double-quoting the value when it holds a separator, a quote or <force>. */
static void put_kv(struct wbuf *w, const char *key, const char *v, size_t n, bool force)
{
    bool quote = force;
    for (size_t i = 0; i < n && !quote; i++) {
        quote = v[i] == ',' || v[i] == ';' || v[i] == '=' || v[i] == '"';
    }
    if (w->len > 0) {
        put(w, ";", 1);
    }
    put(w, key, strlen(key));
    put(w, "=", 1);
    if (!quote) {
        put(w, v, n);
        return;
    }
    put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\') {
            put(w, "\\", 1);
        }
        put(w, v + i, 1);
    }
    put(w, "\"", 1);
}

int sc_tls_xfcc(struct x509_st *peer, struct sc_str by, char *out, size_t cap)
{
    if (cap == 0) {
        return SC_ETOOBIG;
    }
    struct wbuf w = { out, 0, cap, false };
    out[0] = '\0';
    if (header_safe(by.p, by.len)) {
        put_kv(&w, "By", by.p, by.len, false);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[65];
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32) {
        return -EINVAL;
    }
    for (unsigned i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    put_kv(&w, "Hash", hex, 64, false);

    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem) {
        return -ENOMEM;
    }
    const char *subj = "";
    long slen = 0;
    if (X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
        char *sp = NULL;
        slen = BIO_get_mem_data(mem, &sp);
        if (sp && slen > 0) {
            subj = sp;
        } else {
            slen = 0;
        }
    }
    put_kv(&w, "Subject", subj, (size_t)slen, true);
    BIO_free(mem);

    GENERAL_NAMES *names = sans_of(peer);
    bool uri_done = false;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
            const ASN1_IA5STRING *v = NULL;
            if (pass == 0 && g->type == GEN_URI && !uri_done) {
                v = g->d.uniformResourceIdentifier;
                uri_done = true;
            } else if (pass == 1 && g->type == GEN_DNS) {
                v = g->d.dNSName;
            }
            const char *vp = v ? (const char *)ASN1_STRING_get0_data(v) : NULL;
            size_t vn = v ? (size_t)ASN1_STRING_length(v) : 0;
            if (v && header_safe(vp, vn)) {
                put_kv(&w, pass == 0 ? "URI" : "DNS", vp, vn, false);
            }
        }
    }
    GENERAL_NAMES_free(names);
    if (w.over) {
        out[0] = '\0';
        return SC_ETOOBIG;
    }
    out[w.len] = '\0';
    return (int)w.len;
}

/* ---- first-bytes sniffing ----------------------------------------------------------------- */

enum sc_tls_sniff sc_tls_sniff(const void *p, size_t n)
{
    const unsigned char *b = p;
    /* byte 0: content type handshake; 1: version major 3; 2: minor 0..4 (record versions seen in
     * ClientHellos); 3-4: length of the record, at least a handshake header and at most 2^14;
     * 5: handshake type client_hello. */
    if (n >= 1 && b[0] != 0x16) {
        return SC_TLS_SNIFF_PLAIN;
    }
    if (n >= 2 && b[1] != 0x03) {
        return SC_TLS_SNIFF_PLAIN;
    }
    if (n >= 3 && b[2] > 0x04) {
        return SC_TLS_SNIFF_PLAIN;
    }
    if (n >= 5) {
        unsigned len = (unsigned)b[3] << 8 | b[4];
        if (len < 4 || len > 16384) {
            return SC_TLS_SNIFF_PLAIN;
        }
    }
    if (n >= 6) {
        return b[5] == 0x01 ? SC_TLS_SNIFF_TLS : SC_TLS_SNIFF_PLAIN;
    }
    return SC_TLS_SNIFF_MORE;
}
