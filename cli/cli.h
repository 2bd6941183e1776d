/* The `ferry` operator tool: shared pieces of its subcommands. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ferry/err.h"

/* Exit codes: 0 success, 1 input refused (verification), 2 usage or I/O. */
enum { CLI_OK = 0, CLI_REFUSED = 1, CLI_USAGE = 2 };

int cli_pki(int argc, char **argv);
int cli_manifest(int argc, char **argv);
int cli_cmd(int argc, char **argv);

/* Print "ferry: CODE: detail" to stderr. */
void cli_error(const ferry_status *st);
/* An integer option; names the option on error. */
bool cli_int(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out);
/* Key and certificate chain for signing: --key, --cert (leaf first) and an
 * optional --chain appended after it. */
int cli_load_signer(const char *key, const char *cert, const char *chain, EVP_PKEY **pkey,
		    STACK_OF(X509) **certs);
/* What `ferry manifest verify` and `ferry cmd verify` share: load the CA,
 * read the file, run `verify` on its text and print the verified payload.
 * `verify` returns the payload (the caller's reference) or an error. */
typedef struct ferry_trust ferry_trust;
typedef ferry_err (*cli_verify_fn)(const char *buf, size_t len, const ferry_trust *trust, void *arg,
				   json_t **payload, ferry_status *st);
int cli_verify_file(const char *path, const char *ca, cli_verify_fn verify, void *arg);
/* A signed command for gateway gw (what `ferry cmd sign` prints): a random
 * jti (copied to jti), valid from now for ttl seconds; manifest (a signed
 * manifest) and links (component -> URL) may be NULL. */
int cli_command_sign(const char *op, const char *gw, const char *uid, const char *manifest, json_t *links,
		     json_t *keys, int64_t ttl, EVP_PKEY *key, STACK_OF(X509) *certs, char jti[33], char **jws);

int cli_deploy(int argc, char **argv);
int cli_campaign(int argc, char **argv);
int cli_console(int argc, char **argv);
/* The signed manifest in `input`: a spec (its images published to
 * files.dir, signed with the config's manifest signer; *spec_payload, when
 * asked, gets the payload signed) or a signed manifest checked against the
 * org CA.  m: its parsed form.  keys (may be NULL: then a spec may not
 * encrypt) receives the content keys of the components a spec encrypts. */
typedef struct op_config op_config;
typedef struct ferry_manifest ferry_manifest;
int cli_load_manifest(const char *input, bool atomic, const op_config *cfg, char **jws, ferry_manifest *m,
		      json_t **spec_payload, json_t *keys);
/* payload signed as a manifest with the config's manifest signer. */
int cli_sign_manifest(const op_config *cfg, const json_t *payload, char **jws);
/* What a command links for manifest m: component -> its image's sha256,
 * and NAME@BASE -> the sha256 of the delta from BASE. */
json_t *cli_images_of(const ferry_manifest *m);
/* The link gateway gw may use for image sha (docs/cli.md: the formula). */
bool cli_make_link(const op_config *cfg, const char *gw, const char *sha, time_t expires, char *out, size_t n);
/* prefix + UTC time + 6 random hex digits: an update id. */
void cli_new_id(const char *prefix, char *out, size_t n);
int cli_watch(int argc, char **argv);
int cli_fleet(int argc, char **argv);
int cli_delta(int argc, char **argv);
/* True when argv has --help or -h. */
bool cli_wants_help(int argc, char **argv);

#endif
