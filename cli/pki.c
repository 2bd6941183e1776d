/* The demo PKI.  Real deployments bring their own CA; this exists so that a
 * first run, the demo and the tests need nothing but ferry itself.  All keys
 * are P-256 unless asked otherwise; certificates carry exactly the
 * extensions a strict verifier (X509_V_FLAG_X509_STRICT) wants to see. */
#include "pki.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/jsonfield.h"

#define DAY (24 * 3600)

static ferry_err ossl_fail(ferry_status *st, const char *what)
{
	char buf[160];
	unsigned long e = ERR_get_error();

	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", what, e ? buf : "failed");
}

static EVP_PKEY *new_key(ferry_pki_keytype t)
{
	return t == FERRY_PKI_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
				      : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return 0;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

static int add_kind_exts(X509 *cert, X509 *issuer, ferry_pki_kind kind)
{
	int ok = add_ext(cert, cert, NID_subject_key_identifier, "hash") &&
		 add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
	switch (kind) {
	case FERRY_PKI_CA:
		return ok && add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE") &&
		       add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
	case FERRY_PKI_SIGNER:
		return ok && add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
		       add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
	case FERRY_PKI_SERVER:
		return ok && add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
		       add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
		       add_ext(cert, issuer, NID_ext_key_usage, "serverAuth") &&
		       add_ext(cert, issuer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	case FERRY_PKI_CLIENT:
		return ok && add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
		       add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature") &&
		       add_ext(cert, issuer, NID_ext_key_usage, "clientAuth");
	case FERRY_PKI_KEK:
		return ok && add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
		       add_ext(cert, issuer, NID_key_usage, "critical,keyAgreement");
	}
	return 0;
}

/* A random positive 127-bit serial. */
static int set_serial(X509 *cert)
{
	unsigned char r[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return 0;
	r[0] &= 0x7f;
	r[0] |= 0x01;
	bn = BN_bin2bn(r, sizeof(r), NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
	BN_free(bn);
	return ok;
}

static int set_names(X509 *cert, X509 *issuer, const char *cn)
{
	X509_NAME *name = X509_get_subject_name(cert);

	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"ferry demo", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
		return 0;
	return X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
}

ferry_err ferry_pki_issue(const ferry_pki_req *req, X509 **cert_out, EVP_PKEY **key_out, ferry_status *st)
{
	EVP_PKEY *key = req->subject_key, *signer;
	X509 *cert = NULL, *issuer;
	const EVP_MD *md;

	*cert_out = NULL;
	*key_out = NULL;
	if (!req->cn || !*req->cn || (!req->issuer_key) != (!req->issuer_cert))
		return ferry_fail(st, FERRY_E_MALFORMED, "certificate request needs a CN and both or neither issuer parts");
	if (key)
		EVP_PKEY_up_ref(key);
	else if (!(key = new_key(req->keytype)))
		return ossl_fail(st, "key generation");
	signer = req->issuer_key ? req->issuer_key : key;
	md = EVP_PKEY_get_id(signer) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
	cert = X509_new();
	issuer = req->issuer_cert;
	if (!cert || !X509_set_version(cert, X509_VERSION_3) || !set_serial(cert) ||
	    !X509_time_adj_ex(X509_getm_notBefore(cert), 0, 0, &(time_t){req->not_before}) ||
	    !X509_time_adj_ex(X509_getm_notAfter(cert), 0, 0, &(time_t){req->not_after}) ||
	    !X509_set_pubkey(cert, key) || !set_names(cert, issuer, req->cn) ||
	    !add_kind_exts(cert, issuer ? issuer : cert, req->kind) || !X509_sign(cert, signer, md)) {
		X509_free(cert);
		EVP_PKEY_free(key);
		return ossl_fail(st, "certificate");
	}
	*cert_out = cert;
	*key_out = key;
	return FERRY_OK;
}

/* Write through a temp file in dir, fsync, rename: never half a key. */
static ferry_err write_pem(const char *dir, const char *file, mode_t mode, X509 *cert, EVP_PKEY *key,
			   ferry_status *st)
{
	char path[4096], tmp[4200];
	FILE *f;
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
	if ((fd = mkstemp(tmp)) < 0)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	if (fchmod(fd, mode) || !(f = fdopen(fd, "w"))) {
		close(fd);
		unlink(tmp);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	}
	ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path)) {
		unlink(tmp);
		return ossl_fail(st, path);
	}
	return FERRY_OK;
}

ferry_err ferry_pki_write(const char *dir, const char *name, X509 *cert, EVP_PKEY *key, ferry_status *st)
{
	char file[256];
	ferry_err e;

	snprintf(file, sizeof(file), "%s.pem", name);
	if ((e = write_pem(dir, file, 0644, cert, NULL, st)))
		return e;
	snprintf(file, sizeof(file), "%s.key", name);
	return write_pem(dir, file, 0600, NULL, key, st);
}

ferry_err ferry_pki_load_key(const char *path, EVP_PKEY **out, ferry_status *st)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "key %s: %s", path, strerror(errno));
	*out = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!*out) {
		ERR_clear_error();
		return ferry_fail(st, FERRY_E_MALFORMED, "key %s: not a PEM private key", path);
	}
	return FERRY_OK;
}

ferry_err ferry_pki_load_certs(const char *path, STACK_OF(X509) **out, ferry_status *st)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "certificate %s: %s", path, strerror(errno));
	*out = sk_X509_new_null();
	while (*out && (x = PEM_read_X509(f, NULL, NULL, NULL)))
		if (!sk_X509_push(*out, x))
			X509_free(x);
	ERR_clear_error();
	fclose(f);
	if (!*out || sk_X509_num(*out) == 0) {
		sk_X509_pop_free(*out, X509_free);
		*out = NULL;
		return ferry_fail(st, FERRY_E_MALFORMED, "certificate %s: no PEM certificate in it", path);
	}
	return FERRY_OK;
}

typedef struct pki_item {
	char name[80];
	ferry_pki_kind kind;
	const char *cn;
	long days;
} pki_item;

static ferry_err refuse_existing(const char *dir, const pki_item *items, size_t n, ferry_status *st)
{
	char path[4096];

	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 2; k++) {
			snprintf(path, sizeof(path), "%s/%s.%s", dir, items[i].name, k ? "key" : "pem");
			if (access(path, F_OK) == 0)
				return ferry_fail(st, FERRY_E_MALFORMED, "%s already exists; not overwriting it", path);
		}
	return FERRY_OK;
}

static ferry_err issue_and_write(const char *dir, const pki_item *it, X509 *ca, EVP_PKEY *ca_key, time_t now,
				 ferry_status *st)
{
	ferry_pki_req req = {.kind = it->kind, .keytype = FERRY_PKI_P256, .cn = it->cn, .not_before = now - 3600,
			     .not_after = now + it->days * DAY, .issuer_key = ca_key, .issuer_cert = ca};
	X509 *cert;
	EVP_PKEY *key;
	ferry_err e;

	if ((e = ferry_pki_issue(&req, &cert, &key, st)))
		return e;
	e = ferry_pki_write(dir, it->name, cert, key, st);
	X509_free(cert);
	EVP_PKEY_free(key);
	return e;
}

static ferry_err pki_init_items(const char *dir, const char *const *gateways, size_t n_gw, pki_item *items,
				ferry_status *st);

ferry_err ferry_pki_init(const char *dir, const char *const *gateways, size_t n_gw, ferry_status *st)
{
	if (n_gw > FERRY_PKI_GATEWAYS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "at most %d gateways at once, not %zu", FERRY_PKI_GATEWAYS_MAX,
				  n_gw);
	pki_item *items = calloc(3 + 2 * n_gw, sizeof(*items));
	if (!items)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	ferry_err e = pki_init_items(dir, gateways, n_gw, items, st);
	free(items);
	return e;
}

static ferry_err pki_init_items(const char *dir, const char *const *gateways, size_t n_gw, pki_item *items,
				ferry_status *st)
{
	static const pki_item fixed[] = {
		{"cmd-signer", FERRY_PKI_SIGNER, "ferry command signer", 730},
		{"manifest-signer", FERRY_PKI_SIGNER, "ferry manifest signer", 730},
		{"broker", FERRY_PKI_SERVER, "localhost", 730},
	};
	size_t n = 3;
	const pki_item ca_item = {"ca", FERRY_PKI_CA, "ferry demo CA", 3650};
	time_t now = time(NULL);
	X509 *ca;
	EVP_PKEY *ca_key;
	ferry_err e;

	memcpy(items, fixed, sizeof(fixed));
	for (size_t i = 0; i < n_gw; i++) {
		size_t len = strlen(gateways[i]);
		/* The CN becomes an MQTT topic level: nothing that could reach
		 * another gateway's topics. */
		if (len == 0 || len > 64 || !ferry_charset_ok(gateways[i], len, FERRY_CS_ID))
			return ferry_fail(st, FERRY_E_MALFORMED, "gateway id \"%.64s\" must be 1-64 characters of [A-Za-z0-9._-]",
					  gateways[i]);
		snprintf(items[n].name, sizeof(items[n].name), "gw-%s", gateways[i]);
		items[n].kind = FERRY_PKI_CLIENT;
		items[n].cn = gateways[i];
		items[n].days = 730;
		n++;
		/* its key-agreement key, apart from its TLS and signing key:
		 * encrypted images' content keys are wrapped for it */
		snprintf(items[n].name, sizeof(items[n].name), "kek-%s", gateways[i]);
		items[n].kind = FERRY_PKI_KEK;
		items[n].cn = gateways[i];
		items[n].days = 730;
		n++;
	}
	if (mkdir(dir, 0700) && errno != EEXIST)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", dir, strerror(errno));
	if ((e = refuse_existing(dir, &ca_item, 1, st)) || (e = refuse_existing(dir, items, n, st)))
		return e;
	/* Operators connect to a listener of their own, which trusts only
	 * this CA: there the client id is theirs to choose (several tools at
	 * once), and no gateway certificate is let in to choose another
	 * gateway's id. */
	const pki_item ops_ca_item = {"operators-ca", FERRY_PKI_CA, "ferry operators CA", 3650};
	const pki_item op_item = {"operator", FERRY_PKI_CLIENT, "@operator", 730};
	if ((e = refuse_existing(dir, &ops_ca_item, 1, st)) || (e = refuse_existing(dir, &op_item, 1, st)))
		return e;
	ferry_pki_req req = {.kind = FERRY_PKI_CA, .keytype = FERRY_PKI_P256, .cn = ca_item.cn,
			     .not_before = now - 3600, .not_after = now + ca_item.days * DAY};
	if ((e = ferry_pki_issue(&req, &ca, &ca_key, st)))
		return e;
	e = ferry_pki_write(dir, ca_item.name, ca, ca_key, st);
	for (size_t i = 0; !e && i < n; i++)
		e = issue_and_write(dir, &items[i], ca, ca_key, now, st);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	if (e)
		return e;
	req.cn = ops_ca_item.cn;
	if ((e = ferry_pki_issue(&req, &ca, &ca_key, st)))
		return e;
	e = ferry_pki_write(dir, ops_ca_item.name, ca, ca_key, st);
	if (!e)
		e = issue_and_write(dir, &op_item, ca, ca_key, now, st);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return e;
}
