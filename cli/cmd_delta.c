/* `ferry delta`: make a ferry-delta-1 patch from two images, or apply one
 * exactly as a gateway does, to see what a delta saves and that it rebuilds
 * the image. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "delta.h"
#include "files.h"
#include "ferry/delta.h"

static const char help[] =
	"usage: ferry delta make OLD NEW -o PATCH\n"
	"       ferry delta apply BASE PATCH -o NEW [--max-size BYTES]\n"
	"\n"
	"make writes a ferry-delta-1 patch (docs/delta.md) that turns the image OLD\n"
	"into NEW, and prints its size beside NEW's.  apply rebuilds the new image from\n"
	"BASE and PATCH as ferryd does: the base must be the image the patch was made\n"
	"from (size and SHA-256), and the new image at most BYTES (default 1 GiB).\n"
	"It prints the new image's size and SHA-256.  NEW is written whole or not at all.\n";

static void sha_hex(const unsigned char *p, size_t n, char out[65])
{
	unsigned char md[32];
	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int make(const char *oldp, const char *newp, const char *outp)
{
	ferry_status st = {0};
	char *old = NULL, *nw = NULL;
	unsigned char *patch = NULL;
	size_t on = 0, nn = 0, pn = 0;
	int rc = CLI_USAGE;

	if (ferry_read_file(oldp, FERRY_DELTA_MAKE_MAX, &old, &on, &st) ||
	    ferry_read_file(newp, FERRY_DELTA_MAKE_MAX, &nw, &nn, &st)) {
		cli_error(&st);
		goto out;
	}
	if (ferry_delta_make((unsigned char *)old, on, (unsigned char *)nw, nn, &patch, &pn, &st) ||
	    ferry_write_file(outp, patch, pn, &st)) {
		cli_error(&st);
		goto out;
	}
	printf("%s: %zu bytes, %.2f%% of %s (%zu bytes)\n", outp, pn, nn ? 100.0 * (double)pn / (double)nn : 0.0,
	       newp, nn);
	rc = CLI_OK;
out:
	free(old);
	free(nw);
	free(patch);
	return rc;
}

typedef struct grow {
	unsigned char *p;
	size_t n, cap, max;
} grow;

static ferry_err sink(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	grow *g = ctx;
	if (n > g->max - g->n)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the new image grows past %zu bytes", g->max);
	if (n > g->cap - g->n) {
		size_t cap = g->cap ? g->cap * 2 : 65536;
		while (cap - g->n < n)
			cap *= 2;
		unsigned char *q = realloc(g->p, cap);
		if (!q)
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		g->p = q;
		g->cap = cap;
	}
	memcpy(g->p + g->n, p, n);
	g->n += n;
	return FERRY_OK;
}

static int apply(const char *basep, const char *patchp, const char *outp, int64_t max)
{
	ferry_status st = {0};
	grow g = {.max = (size_t)max};
	int bfd = open(basep, O_RDONLY | O_CLOEXEC), pfd = open(patchp, O_RDONLY | O_CLOEXEC), rc = CLI_USAGE;
	char sha[65];

	if (bfd < 0 || pfd < 0) {
		fprintf(stderr, "ferry: %s: %s\n", bfd < 0 ? basep : patchp, strerror(errno));
	} else if (ferry_delta_apply(bfd, pfd, (uint64_t)max, sink, &g, &st)) {
		cli_error(&st);
		rc = st.code == FERRY_E_INTERNAL ? CLI_USAGE : CLI_REFUSED;
	} else if (ferry_write_file(outp, g.p ? g.p : (unsigned char *)"", g.n, &st)) {
		cli_error(&st);
	} else {
		sha_hex(g.p ? g.p : (unsigned char *)"", g.n, sha);
		printf("%s: %zu bytes, sha256 %s\n", outp, g.n, sha);
		rc = CLI_OK;
	}
	if (bfd >= 0)
		close(bfd);
	if (pfd >= 0)
		close(pfd);
	free(g.p);
	return rc;
}

int cli_delta(int argc, char **argv)
{
	static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
					     {"max-size", required_argument, NULL, 'm'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *outp = NULL;
	int64_t max = FERRY_DELTA_MAKE_MAX;
	int c;

	if (cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLI_OK;
	}
	if (argc < 2 || (strcmp(argv[1], "make") && strcmp(argv[1], "apply"))) {
		fputs(help, stderr);
		return CLI_USAGE;
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "o:m:", opts, NULL)) != -1) {
		switch (c) {
		case 'o': outp = optarg; break;
		case 'm':
			if (!cli_int("--max-size", optarg, 0, FERRY_DELTA_MAKE_MAX, &max))
				return CLI_USAGE;
			break;
		default: fputs(help, stderr); return CLI_USAGE;
		}
	}
	if (optind + 2 != argc || !outp) {
		fprintf(stderr, "ferry delta %s: give two files and -o OUT\n", argv[1]);
		return CLI_USAGE;
	}
	if (!strcmp(argv[1], "make"))
		return make(argv[optind], argv[optind + 1], outp);
	return apply(argv[optind], argv[optind + 1], outp, max);
}
