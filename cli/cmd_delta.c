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
#include <sys/stat.h>
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

/* The new image goes to a temporary file beside OUT, renamed over it only
 * once whole: memory stays the decoder's, whatever the image's size. */
typedef struct out_file {
	int fd;
	EVP_MD_CTX *md;
	uint64_t n;
} out_file;

static ferry_err sink(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	out_file *o = ctx;
	EVP_DigestUpdate(o->md, p, n);
	o->n += n;
	while (n) {
		ssize_t w = write(o->fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return ferry_fail(st, FERRY_E_INTERNAL, "writing the new image: %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
	return FERRY_OK;
}

static int apply(const char *basep, const char *patchp, const char *outp, int64_t max)
{
	ferry_status st = {0};
	char tmp[4200], sha[65];
	unsigned char md[32];
	out_file o = {.fd = -1, .md = EVP_MD_CTX_new()};
	int bfd = open(basep, O_RDONLY | O_CLOEXEC), pfd = open(patchp, O_RDONLY | O_CLOEXEC), rc = CLI_USAGE;

	snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", outp);
	if (bfd < 0 || pfd < 0) {
		fprintf(stderr, "ferry: %s: %s\n", bfd < 0 ? basep : patchp, strerror(errno));
	} else if (!o.md || !EVP_DigestInit_ex(o.md, EVP_sha256(), NULL) || (o.fd = mkstemp(tmp)) < 0) {
		fprintf(stderr, "ferry: %s: cannot create a temporary file: %s\n", outp, strerror(errno));
	} else if (ferry_delta_apply(bfd, pfd, (uint64_t)max, sink, &o, &st)) {
		cli_error(&st);
		rc = st.code == FERRY_E_INTERNAL ? CLI_USAGE : CLI_REFUSED;
	} else if (fchmod(o.fd, 0644) || fsync(o.fd) || rename(tmp, outp)) {
		fprintf(stderr, "ferry: %s: %s\n", outp, strerror(errno));
	} else {
		EVP_DigestFinal_ex(o.md, md, NULL);
		for (int i = 0; i < 32; i++)
			snprintf(sha + 2 * i, 3, "%02x", md[i]);
		printf("%s: %llu bytes, sha256 %s\n", outp, (unsigned long long)o.n, sha);
		rc = CLI_OK;
	}
	if (o.fd >= 0) {
		close(o.fd);
		if (rc != CLI_OK)
			unlink(tmp);
	}
	if (bfd >= 0)
		close(bfd);
	if (pfd >= 0)
		close(pfd);
	EVP_MD_CTX_free(o.md);
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
