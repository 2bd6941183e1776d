/* `ferry pki`: a demo PKI so that a first run needs nothing but this tool. */
#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opconfig.h"
#include "pki.h"


static const char help[] =
	"usage: ferry pki init DIR [--gateway ID]...\n"
	"\n"
	"Makes a demo PKI in DIR as PEM files (keys are mode 0600):\n"
	"  ca.pem, ca.key                    the organisation CA (trust anchor for commands and manifests)\n"
	"  cmd-signer.pem, .key              signs commands\n"
	"  manifest-signer.pem, .key         signs manifests\n"
	"  broker.pem, .key                  MQTT/HTTPS server certificate for localhost and 127.0.0.1\n"
	"  gw-ID.pem, .key                   one client certificate per --gateway, CN = ID\n"
	"  kek-ID.pem, .key                  its key-agreement key (content keys of encrypted images)\n"
	"  operators-ca.pem, .key            the CA of the broker's operator listener\n"
	"  operator.pem, .key                the operator's client certificate (CN @operator)\n"
	"  operator.yaml                     the operator's config (docs/cli.md), naming these\n"
	"  files/                            the file host's directory that ferry deploy fills\n"
	"Existing files are never overwritten.\n";

int cli_pki(int argc, char **argv)
{
	static const struct option opts[] = {{"gateway", required_argument, NULL, 'g'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char **gws;
	size_t n = 0;
	ferry_status st = {0};
	int c;

	if (argc < 2 || strcmp(argv[1], "init") || cli_wants_help(argc, argv)) {
		fputs(help, argc >= 2 && cli_wants_help(argc, argv) ? stdout : stderr);
		return argc >= 2 && cli_wants_help(argc, argv) ? CLI_OK : CLI_USAGE;
	}
	gws = calloc((size_t)argc, sizeof(*gws)); /* no more than the words given */
	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "g:h", opts, NULL)) != -1) {
		if (c == 'g' && gws) {
			gws[n++] = optarg;
		} else {
			fputs(help, stderr);
			free(gws);
			return CLI_USAGE;
		}
	}
	if (optind + 1 != argc - 1) {
		fprintf(stderr, "ferry pki init: give exactly one DIR\n");
		free(gws);
		return CLI_USAGE;
	}
	char files[4096];
	snprintf(files, sizeof(files), "%s/files", argv[optind + 1]);
	if (ferry_pki_init(argv[optind + 1], gws, n, &st) || op_config_write_default(argv[optind + 1], &st)) {
		cli_error(&st);
		free(gws);
		return CLI_USAGE;
	}
	free(gws);
	if (mkdir(files, 0755) && errno != EEXIST) {
		fprintf(stderr, "ferry: %s: %s\n", files, strerror(errno));
		return CLI_USAGE;
	}
	printf("PKI written to %s (%zu gateway certificate%s)\n", argv[optind + 1], n, n == 1 ? "" : "s");
	return CLI_OK;
}
