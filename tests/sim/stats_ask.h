/* How a test gets stats that are current: it writes a token to
 * "<stats>.ask"; the simulator's next stats write, made after it read the
 * token, ends with "answer=<token>".  So a stats file that carries the
 * token counts every event the simulator handled before the test asked,
 * with no guess at how long a rewrite takes. */
#ifndef FERRY_SIM_STATS_ASK_H
#define FERRY_SIM_STATS_ASK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The token waiting in PATH.ask, in tok; true when it differs from the last
 * one answered (in last, updated). */
static inline bool stats_asked(const char *path, char tok[64], char last[64])
{
	char ask[4200];
	FILE *f;

	tok[0] = 0;
	snprintf(ask, sizeof(ask), "%s.ask", path);
	if (!(f = fopen(ask, "r")))
		return false;
	if (!fgets(tok, 64, f))
		tok[0] = 0;
	fclose(f);
	tok[strcspn(tok, "\r\n")] = 0;
	if (!tok[0] || !strcmp(tok, last))
		return false;
	snprintf(last, 64, "%s", tok);
	return true;
}

#endif
