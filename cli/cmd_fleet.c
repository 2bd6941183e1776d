/* `ferry fleet`: one table of the fleet from the retained inventories and
 * states on the broker, filtered by attributes and component versions. */
#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ferry/jsonfield.h"
#include "ferry/semver.h"
#include "ferry/trust.h"
#include "fleet.h"
#include "opconfig.h"
#include "opmqtt.h"

static const char help[] =
	"usage: ferry fleet [--where COND]... [--json] [--config F]\n"
	"\n"
	"Prints one row per gateway, device and component from the inventories\n"
	"the gateways keep on the broker: online or offline, the version, and the\n"
	"attributes --where names.  A version older than the newest seen for the\n"
	"same component is marked with *.  Conditions (all must hold):\n"
	"  KEY=VALUE, KEY!=VALUE            a gateway attribute (arch, kernel, the\n"
	"                                   config's own), `gateway` or `state`\n"
	"  component.NAME<V (<=, >, >=, =, !=)  some device's NAME against version V;\n"
	"                                   an unknown version is older than any\n";

typedef struct fleet_ctx {
	fleet *fl;
} fleet_ctx;

static void on_msg(void *ctx, const char *topic, const char *payload, size_t len, bool retained)
{
	fleet_add(((fleet_ctx *)ctx)->fl, topic, payload, len);
}

int cli_fleet(int argc, char **argv)
{
	static const struct option opts[] = {{"where", required_argument, NULL, 'w'},
					     {"config", required_argument, NULL, 'c'},
					     {"json", no_argument, NULL, 'j'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *cfgp = NULL;
	bool json = false;
	ferry_status st = {0};
	op_config cfg;
	op_mqtt *m = NULL;
	fleet_ctx ctx = {0};
	ferry_trust *trust = NULL;
	int c, rc = CLI_USAGE;

	if (cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLI_OK;
	}
	if (!(ctx.fl = fleet_new()))
		return CLI_USAGE;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'w':
			if (fleet_where(ctx.fl, optarg, &st)) {
				fprintf(stderr, "ferry fleet: --where: %s\n", st.detail);
				goto out;
			}
			break;
		case 'c': cfgp = optarg; break;
		case 'j': json = true; break;
		default: fputs(help, stderr); goto out;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ferry fleet: unexpected argument \"%s\"\n", argv[optind]);
		goto out;
	}
	if (op_config_load(cfgp, &cfg, &st)) {
		cli_error(&st);
		goto out;
	}
	char cache[OPCFG_PATH_MAX + 16];
	snprintf(cache, sizeof(cache), "%s/opened.db", cfg.state_dir);
	if ((mkdir(cfg.state_dir, 0700) && errno != EEXIST) || fleet_set_cache(ctx.fl, cache, cfg.gateway_ca, &st)) {
		/* without the cache every message is opened: slower, same table */
		if (st.code)
			fprintf(stderr, "ferry fleet: %s (going on without it)\n", st.detail);
		st = (ferry_status){0};
	}
	if (ferry_trust_load(cfg.gateway_ca, &trust, &st) ||
	    (fleet_set_trust(ctx.fl, trust), op_mqtt_connect(&cfg, on_msg, &ctx, &m, &st)) ||
	    op_mqtt_subscribe(m, "ferry/v1/+/inventory", &st) || op_mqtt_subscribe(m, "ferry/v1/+/state", &st) ||
	    op_mqtt_sync(m, &st)) {
		cli_error(&st);
		goto out;
	}
	op_mqtt_free(m);
	m = NULL;
	if (json)
		fleet_print_json(ctx.fl, stdout);
	else
		fleet_print(ctx.fl, stdout);
	if (fleet_refused(ctx.fl))
		fprintf(stderr, "ferry fleet: %u message%s refused\n", fleet_refused(ctx.fl),
			fleet_refused(ctx.fl) == 1 ? "" : "s");
	rc = CLI_OK;
out:
	op_mqtt_free(m);
	fleet_free(ctx.fl);
	ferry_trust_free(trust);
	return rc;
}
