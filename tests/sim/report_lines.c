/* The test world's reader of what gateways publish: mosquitto_sub -v prints
 * "TOPIC PAYLOAD" lines, and a gateway's replies, stage reports and
 * inventories are signed (a compact JWS).  Each is opened with the same
 * check every consumer makes (ferry_report_open: the chain to the CA, the
 * signature, the signer's CN is the gateway of the topic) and written back
 * as "TOPIC JSON", so the scenarios read what the gateway said.  One that
 * does not open is written as "TOPIC !refused CODE: DETAIL" instead.  Every
 * other line passes as it is.  A line out per line in, flushed.
 *
 *   mosquitto_sub -v ... | report_lines [--stamp] CA.pem >> mqtt.log
 *
 * --stamp puts the time each line was read (Unix seconds with microseconds,
 * as mosquitto_sub's %U) and a space before it, for the benchmarks.
 * --stamped takes lines that start with such a stamp already (mosquitto_sub
 * -F '%U %t %p': the time the message arrived, before this reader's own
 * backlog) and keeps it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/report.h"

int main(int argc, char **argv)
{
	ferry_status st = {0};
	ferry_trust *trust = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	bool stamp = argc == 3 && !strcmp(argv[1], "--stamp"), stamped = argc == 3 && !strcmp(argv[1], "--stamped");
	if (argc != 2 + (stamp || stamped)) {
		fprintf(stderr, "usage: report_lines [--stamp|--stamped] CA.pem\n");
		return 2;
	}
	if (ferry_trust_load(argv[argc - 1], &trust, &st)) {
		fprintf(stderr, "report_lines: %s\n", st.detail);
		return 2;
	}
	while ((n = getline(&line, &cap, stdin)) > 0) {
		char gw[65], kind[16], *start = line;
		if (line[n - 1] == '\n')
			line[--n] = 0;
		if (stamped) {
			char *sp0 = strchr(line, ' ');
			if (sp0) {
				*sp0 = 0;
				printf("%s ", line);
				line = sp0 + 1;
			}
		}
		if (stamp) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			printf("%lld.%06ld ", (long long)ts.tv_sec, ts.tv_nsec / 1000);
		}
		char *sp = strchr(line, ' ');
		if (!sp || strncmp(line, "ferry/v1/", 9) || sscanf(line + 9, "%64[A-Za-z0-9._-]/%15[a-z] ", gw, kind) != 2 ||
		    (size_t)(sp - line) != 9 + strlen(gw) + 1 + strlen(kind) ||
		    (strcmp(kind, "reply") && strcmp(kind, "stage") && strcmp(kind, "inventory"))) {
			printf("%s\n", line);
			fflush(stdout);
			line = start;
			continue;
		}
		json_t *payload = NULL;
		ferry_status rs = {0};
		*sp = 0;
		const char *body = sp + 1;
		if (ferry_report_open(body, strlen(body), trust, gw, time(NULL), &payload, &rs)) {
			printf("%s !refused %s: %s\n", line, ferry_err_code(rs.code), rs.detail);
		} else {
			char *j = json_dumps(payload, JSON_COMPACT | JSON_PRESERVE_ORDER);
			printf("%s %s\n", line, j ? j : "?");
			free(j);
			json_decref(payload);
		}
		fflush(stdout);
		line = start;
	}
	free(line);
	ferry_trust_free(trust);
	return 0;
}
