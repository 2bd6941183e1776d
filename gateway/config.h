/* ferryd's configuration, read from YAML (config/ferryd.yaml documents every
 * key).  A bad file is refused whole with a message naming the file, the line
 * and the key. */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_CFG_PATH_MAX 1024
#define FERRY_CFG_ATTRS_MAX 32

typedef struct ferry_config {
	char gateway_id[65];
	struct {
		char host[256];
		int port;
		char ca[FERRY_CFG_PATH_MAX];
		char cert[FERRY_CFG_PATH_MAX];
		char key[FERRY_CFG_PATH_MAX];
		int keepalive_s;
		int reconnect_min_ms, reconnect_max_ms;
	} broker;
	char topic_prefix[256]; /* default ferry/v1/<gateway_id> */
	struct {
		char command_ca[FERRY_CFG_PATH_MAX];
		char manifest_ca[FERRY_CFG_PATH_MAX];
		int clock_skew_s;
		int64_t min_time; /* a clock before this is not trusted (clock_unsynced) */
	} trust;
	char state_dir[FERRY_CFG_PATH_MAX];
	struct {
		char dir[FERRY_CFG_PATH_MAX]; /* default <state_dir>/store */
		int64_t cap_bytes;
	} store;
	struct {
		char ca[FERRY_CFG_PATH_MAX];
		int connect_timeout_s;
		int low_speed_bytes, low_speed_time_s;
		int retries;
		int retry_delay_ms;
		int parallel; /* images downloaded at once */
		int deadline_s; /* the longest one update's downloads may take; 0: none */
	} download;
	struct {
		int parallel; /* device sessions at once */
	} install;
	struct {
		int parallel; /* updates run at once */
	} updates;
	struct {
		/* the key-agreement key content keys are wrapped for, and its
		 * certificate (published in the inventory); "" when absent */
		char key[FERRY_CFG_PATH_MAX];
		char cert[FERRY_CFG_PATH_MAX];
	} decryption;
	struct {
		bool sign; /* replies, stage reports and the inventory as JWS with the broker key */
	} reports;
	char plugin_dir[FERRY_CFG_PATH_MAX];
	json_t *adapters;   /* adapter name -> its section (object), as written */
	json_t *attributes; /* custom inventory attributes: name -> string */
	json_t *min_link;   /* component name -> the weakest link it may be pushed over */
	char file[FERRY_CFG_PATH_MAX]; /* where it was read from */
	json_t *lines;                 /* key -> line in that file, for messages */
} ferry_config;

/* Load and check path.  On error the detail reads "FILE:LINE: KEY: what". */
ferry_err ferry_config_load(const char *path, ferry_config *out, ferry_status *st) FERRY_WUR;
void ferry_config_free(ferry_config *c);
/* What the config names must be usable: every CA file holds certificates,
 * the gateway's certificate and key parse and belong together, the state
 * and store dirs are (or can be made) writable directories.  The detail
 * reads "FILE:LINE: KEY: what". */
ferry_err ferry_config_check_files(const ferry_config *c, ferry_status *st) FERRY_WUR;

#endif
