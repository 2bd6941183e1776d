/* The operator's config, operator.yaml: what every `ferry` command that
 * talks to the fleet needs (broker, signers, the org CA, the file host, a
 * state dir).  `ferry pki init` writes one; --config, $FERRY_OPERATOR_CONFIG
 * or ~/.config/ferry/operator.yaml names it. */
#ifndef FERRY_CLI_OPCONFIG_H
#define FERRY_CLI_OPCONFIG_H

#include <stdbool.h>

#include "ferry/err.h"

#define OPCFG_PATH_MAX 1024

typedef struct op_config {
	char file[OPCFG_PATH_MAX];
	struct {
		char host[256];
		int port;
		char ca[OPCFG_PATH_MAX], cert[OPCFG_PATH_MAX], key[OPCFG_PATH_MAX];
		int keepalive_s;
	} broker;
	struct {
		char key[OPCFG_PATH_MAX], cert[OPCFG_PATH_MAX];
	} command_signer, manifest_signer;
	char gateway_ca[OPCFG_PATH_MAX]; /* the org CA gateways' certificates chain to */
	struct {
		char base_url[1024];  /* where gateways fetch images: base_url + sha256 */
		char dir[OPCFG_PATH_MAX]; /* optional: the file host's directory, for publishing */
		char link_secret[256];
		int link_ttl_s;
	} files;
	char state_dir[OPCFG_PATH_MAX];
} op_config;

/* Loads the file named by `path`, else $FERRY_OPERATOR_CONFIG, else
 * ~/.config/ferry/operator.yaml.  Unknown keys are refused with file, line
 * and key; paths must be absolute. */
ferry_err op_config_load(const char *path, op_config *c, ferry_status *st) FERRY_WUR;
/* Writes the operator.yaml that `ferry pki init DIR` makes. */
ferry_err op_config_write_default(const char *dir, ferry_status *st) FERRY_WUR;

#endif
