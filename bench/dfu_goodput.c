/* Benchmark: usb-dfu push goodput against the simulated DFU device.
 *
 * For each device model (wTransferSize and the bwPollTimeout the device
 * reports), starts the simulated device, runs the real usb-dfu plugin
 * against it through the real libusb (a child process under umockdev's
 * preload, as ferryd would run it), and pushes one image: write, activate,
 * confirm, commit.  Models are interleaved and each is repeated
 * (FERRY_BENCH_REPS, default 5); medians and min-max are printed.
 *
 * The reference is the modeled limit of the download phase, for a host
 * that does nothing but what DFU 1.1 requires for each block: one DNLOAD,
 * a GETSTATUS that starts the device's busy time, a wait of exactly the
 * bwPollTimeout the device reported, and a GETSTATUS that finds it idle:
 *
 *     limit = bytes / (blocks x (t_DNLOAD + 2 t_GETSTATUS + bwPollTimeout))
 *
 * t_DNLOAD and t_GETSTATUS are control-transfer times measured in the same
 * push: this benchmark interposes libusb_control_transfer and takes the
 * median time of each request.  The download phase is timed from the first
 * DNLOAD to the end of write(); the ratio shows what the plugin adds on top
 * of that protocol minimum (extra transfers, late wake-ups, its own work).
 * The whole push is timed too, from write() (whose first act is the detach)
 * to confirm() returning with the version the device reports on its new
 * firmware, and split into detach, download and manifest-to-return.
 *
 * What the model leaves out: the control-transfer times are those of this
 * plumbing (a umockdev socket round trip per URB), not of a USB bus; on
 * full-speed hardware a control transfer costs about one 1 ms frame and the
 * device's flash, not the host, is what bwPollTimeout stands for.  Detach,
 * manifestation and re-enumeration times come from the simulator's
 * settings (a 50 ms manifestation; re-enumeration as fast as udev events
 * travel here) and are printed, not judged.
 *
 *   dfu_goodput PLUGIN SIMULATOR [IMAGE_BYTES [REPS]]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"

#define DFU_DNLOAD 1
#define DFU_GETSTATUS 3
#define DFU_DNBUSY 4
#define CLASS_INTERFACE 0x21 /* bmRequestType: class, interface (direction masked off) */
#define MAX_XFERS (1u << 18)

static const char *g_transfer = "1024";

/* ---- the interposed control transfers (in the child) ---- */

struct libusb_device_handle;
typedef int (*control_fn)(struct libusb_device_handle *, uint8_t, uint8_t, uint16_t, uint16_t, unsigned char *,
                          uint16_t, unsigned int);
static control_fn g_real;
static struct xfer {
	uint8_t req;
	uint16_t len;
	int64_t t0, t1; /* microseconds */
	uint32_t poll;  /* a GETSTATUS answer's bwPollTimeout while busy */
} *g_x;
static size_t g_nx;

int libusb_control_transfer(struct libusb_device_handle *h, uint8_t type, uint8_t req, uint16_t value,
                            uint16_t index, unsigned char *data, uint16_t len, unsigned int timeout);

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The plugin's libusb_control_transfer binds to this one (the executable
 * exports it), which times the real one. */
int libusb_control_transfer(struct libusb_device_handle *h, uint8_t type, uint8_t req, uint16_t value,
                            uint16_t index, unsigned char *data, uint16_t len, unsigned int timeout)
{
	int64_t t0 = now_us();
	int r = g_real(h, type, req, value, index, data, len, timeout);
	if ((type & 0x7f) == CLASS_INTERFACE && g_nx < MAX_XFERS) {
		struct xfer *x = &g_x[g_nx++];
		*x = (struct xfer){.req = req, .len = len, .t0 = t0, .t1 = now_us()};
		if (req == DFU_GETSTATUS && r == 6 && data[4] == DFU_DNBUSY)
			x->poll = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16;
	}
	return r;
}

static int64_t host_now_ms(void *ctx)
{
	return now_us() / 1000;
}

static void host_log(void *ctx, int level, const char *msg)
{
	if (level <= FERRY_LOG_WARNING)
		fprintf(stderr, "  adapter: %s\n", msg);
}

static const char *host_config(void *ctx, const char *key)
{
	if (!strcmp(key, "devices[0].component"))
		return "mcu";
	if (!strcmp(key, "devices[0].vendor_id") || !strcmp(key, "devices[0].class_id"))
		return "bench";
	if (!strcmp(key, "devices[0].serial"))
		return "FERRY-SIM-1";
	if (!strcmp(key, "transfer_size"))
		return g_transfer;
	return NULL;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
}

static bool cancelled(void *ctx)
{
	return false;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Median duration of request REQ with a length of at least MIN_LEN among
 * transfers [from, to), or -1. */
static double median_us(size_t from, size_t to, uint8_t req, uint16_t min_len)
{
	int64_t *d = malloc(sizeof(*d) * (to - from + 1));
	size_t n = 0;
	for (size_t i = from; d && i < to; i++)
		if (g_x[i].req == req && g_x[i].len >= min_len)
			d[n++] = g_x[i].t1 - g_x[i].t0;
	double m = -1;
	if (n) {
		qsort(d, n, sizeof(*d), cmp_i64);
		m = n % 2 ? (double)d[n / 2] : (double)(d[n / 2 - 1] + d[n / 2]) / 2;
	}
	free(d);
	return m;
}

/* The child: push IMAGE with the plugin and print, on one line, the bytes
 * and microseconds of the download phase, the blocks, the median DNLOAD and
 * GETSTATUS times (us), the device's bwPollTimeout (ms), and the detach and
 * whole-push times (us). */
static int push(const char *plugin, const char *image)
{
	void *dl = dlopen(plugin, RTLD_NOW);
	const ferry_adapter_v2 *(*table)(void);
	ferry_host_v1 host = {.size = sizeof(host), .log = host_log, .config = host_config, .now_ms = host_now_ms};
	ferry_session_host_v1 sh = {.size = sizeof(sh), .progress = progress, .cancelled = cancelled};
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "", version[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_device_v1 dev[2];
	void *state = NULL, *sess = NULL;
	size_t n = 0;
	uint64_t off = 0;
	struct stat sb;
	int rc = 1;

	g_x = calloc(MAX_XFERS, sizeof(*g_x));
	if (!dl || !g_x || !(*(void **)&table = dlsym(dl, "ferry_adapter_table_v2")) ||
	    !(*(void **)&g_real = dlsym(dl, "libusb_control_transfer")) || stat(image, &sb))
		return 1;
	const ferry_adapter_v2 *t = table();
	memset(dev, 0, sizeof(dev));
	ferry_image_v1 img = {.size = sizeof(img),
	                      .component = "mcu",
	                      .path = image,
	                      .length = (uint64_t)sb.st_size,
	                      .format = "dfu",
	                      .version = "1.1.0"};
	int64_t start = 0, written = 0, back = 0;
	size_t first = 0, end = 0;
	if (t->init(&host, &state, detail) == 0 && t->discover(state, dev, 2, &n, detail) == 0 && n == 1 &&
	    t->open(state, &dev[0], &sh, &sess, detail) == 0 && t->check(sess, &img, detail) == 0) {
		start = now_us();
		size_t before = g_nx;
		if (t->write(sess, &img, &off, detail) == 0) {
			written = now_us();
			end = g_nx;
			if (t->activate(sess, &img, detail) == 0 && t->confirm(sess, &img, version, detail) == 0) {
				back = now_us();
				rc = t->commit(sess, &img, detail);
			}
		}
		for (first = before; first < end && !(g_x[first].req == DFU_DNLOAD && g_x[first].len); first++)
			;
	}
	uint64_t bytes = 0, blocks = 0;
	uint32_t poll = 0;
	for (size_t i = first; i < end; i++) {
		if (g_x[i].req == DFU_DNLOAD && g_x[i].len)
			bytes += g_x[i].len, blocks++;
		if (g_x[i].poll > poll)
			poll = g_x[i].poll;
	}
	double t_dn = median_us(first, end, DFU_DNLOAD, (uint16_t)atoi(g_transfer));
	double t_st = median_us(first, end, DFU_GETSTATUS, 0);
	if (!rc && first < end && blocks && t_dn >= 0 && t_st >= 0)
		printf("%llu %lld %llu %.1f %.1f %u %lld %lld\n", (unsigned long long)bytes,
		       (long long)(written - g_x[first].t0), (unsigned long long)blocks, t_dn, t_st, poll,
		       (long long)(g_x[first].t0 - start), (long long)(back - start));
	else
		fprintf(stderr, "  failed: %s\n", detail[0] ? detail : "no device");
	if (sess)
		t->close(sess);
	if (state)
		t->fini(state);
	return rc;
}

/* ---- the parent ---- */

struct result {
	double got, limit;          /* download phase, B/s */
	double t_dn, t_st, detach;  /* us */
	double whole, dl;           /* us */
	unsigned poll;
};

static int run(const char *plugin, const char *sim, const char *dir, const char *image, const char *xfer,
               const char *poll, struct result *res)
{
	char root_file[300], root[300] = "", out[256] = "";
	pid_t sim_pid, child;
	int fd[2];
	FILE *f;

	snprintf(root_file, sizeof(root_file), "%s/root", dir);
	unlink(root_file);
	if ((sim_pid = fork()) == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 2); /* the device's own log is not the bench's output */
		execl(sim, sim, "--root-file", root_file, "--version", "1.0.0", "--transfer-size", xfer, "--poll-ms",
		      poll, (char *)NULL);
		_exit(127);
	}
	/* the simulator writes the file once its world is built */
	for (int i = 0; i < 500 && access(root_file, F_OK); i++)
		usleep(20000);
	if ((f = fopen(root_file, "r"))) {
		if (!fgets(root, sizeof(root), f))
			root[0] = '\0';
		fclose(f);
	}
	if (!root[0] || pipe(fd))
		return -1;
	if ((child = fork()) == 0) {
		dup2(fd[1], 1);
		close(fd[0]);
		setenv("UMOCKDEV_DIR", root, 1);
		setenv("LD_PRELOAD", "libumockdev-preload.so.0", 1);
		execl("/proc/self/exe", "dfu_goodput", "--push", plugin, image, xfer, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	size_t got = 0;
	ssize_t r;
	while (got < sizeof(out) - 1 && (r = read(fd[0], out + got, sizeof(out) - 1 - got)) > 0)
		got += (size_t)r;
	close(fd[0]);
	waitpid(child, NULL, 0);
	kill(sim_pid, SIGTERM);
	waitpid(sim_pid, NULL, 0);
	unsigned long long bytes, blocks;
	long long dl_us, detach, whole;
	if (sscanf(out, "%llu %lld %llu %lf %lf %u %lld %lld", &bytes, &dl_us, &blocks, &res->t_dn, &res->t_st,
	           &res->poll, &detach, &whole) != 8 || dl_us <= 0)
		return -1;
	res->got = (double)bytes * 1e6 / (double)dl_us;
	res->limit = (double)bytes * 1e6 / ((double)blocks * (res->t_dn + 2 * res->t_st + res->poll * 1000.0));
	res->detach = (double)detach;
	res->whole = (double)whole;
	res->dl = (double)dl_us;
	return 0;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MODELS 4
#define REPS_MAX 50

int main(int argc, char **argv)
{
	static const char *models[MODELS][2] = {{"64", "1"}, {"1024", "5"}, {"2048", "8"}, {"4096", "20"}};
	static struct result res[MODELS][REPS_MAX];
	int ok[MODELS] = {0};
	char dir[] = "/tmp/ferry-dfu-bench-XXXXXX", image[300], cmd[700];
	long size = argc > 3 ? atol(argv[3]) : 262144;
	int reps = argc > 4 ? atoi(argv[4]) : 5;

	if (argc == 5 && !strcmp(argv[1], "--push")) {
		g_transfer = argv[4];
		return push(argv[2], argv[3]);
	}
	if (argc < 3 || reps < 1 || reps > REPS_MAX || !mkdtemp(dir)) {
		fprintf(stderr, "usage: dfu_goodput PLUGIN SIMULATOR [IMAGE_BYTES [REPS]]\n");
		return 2;
	}
	snprintf(image, sizeof(image), "%s/fw.dfu", dir);
	snprintf(cmd, sizeof(cmd), "%s --make-image 1.1.0 %ld %s && dfu-suffix -v 1209 -p 0001 -a %s >/dev/null",
	         argv[2], size, image, image);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make the image (is dfu-suffix installed?)\n");
		return 1;
	}
	printf("usb-dfu push, %ld-byte image, simulated DFU 1.1 device behind libusb, %d repetitions interleaved\n",
	       size, reps);
	for (int r = 0; r < reps; r++)
		for (int i = 0; i < MODELS; i++) {
			struct result *x = &res[i][ok[i]];
			if (run(argv[1], argv[2], dir, image, models[i][0], models[i][1], x) == 0)
				ok[i]++;
			else
				printf("  %4s-byte blocks, %2s ms poll: a push failed\n", models[i][0], models[i][1]);
		}
	int rc = 0;
	for (int i = 0; i < MODELS; i++) {
		double got[REPS_MAX], lim[REPS_MAX], ratio[REPS_MAX], tdn[REPS_MAX], tst[REPS_MAX], whole[REPS_MAX],
		    det[REPS_MAX], rest[REPS_MAX];
		int n = ok[i];
		if (n == 0) {
			rc = 1;
			continue;
		}
		for (int k = 0; k < n; k++) {
			struct result *x = &res[i][k];
			got[k] = x->got, lim[k] = x->limit, ratio[k] = x->got / x->limit;
			tdn[k] = x->t_dn, tst[k] = x->t_st, whole[k] = x->whole / 1000, det[k] = x->detach / 1000;
			rest[k] = (x->whole - x->detach - x->dl) / 1000;
		}
		double mg = median(got, n), ml = median(lim, n), mdn = median(tdn, n), mst = median(tst, n);
		double mw = median(whole, n), md = median(det, n), mr = median(rest, n);
		median(ratio, n); /* sorts */
		printf("  %4s-byte blocks, bwPollTimeout %u ms: download %8.0f B/s of a modeled %8.0f B/s = %.2f "
		       "(per repetition %.2f-%.2f); DNLOAD %.0f us, GETSTATUS %.0f us\n",
		       models[i][0], res[i][0].poll, mg, ml, mg / ml, ratio[0], ratio[n - 1], mdn, mst);
		printf("  %4s-byte blocks: whole push %.0f ms = detach %.0f + download %.0f + manifest to answer "
		       "%.0f\n",
		       models[i][0], mw, md, mw - md - mr, mr);
		printf("row: | usb-dfu download, %s-byte blocks, %u ms poll | %.0f B/s | modeled limit with measured "
		       "control transfers, %.0f B/s | %.2f | %.2f-%.2f | %s |\n",
		       models[i][0], res[i][0].poll, mg, ml, mg / ml, ratio[0], ratio[n - 1],
		       !strcmp(models[i][0], "1024") ? ">= 0.95" : "-");
		if (!strcmp(models[i][0], "1024"))
			printf("row: | usb-dfu whole push, %ld bytes, 1024-byte blocks | %.0f ms | detach %.0f ms, "
			       "download %.0f ms, manifest to answer %.0f ms | - | %d runs | - |\n",
			       size, mw, md, mw - md - mr, mr, n);
	}
	printf("  goal: >= 0.95 of the modeled limit for the download phase at 1024-byte blocks\n");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? rc : 1;
}
