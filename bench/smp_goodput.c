/* Benchmark: serial-smp push goodput over an emulated UART.
 *
 * Loads the real serial-smp plugin the way ferryd does, against the
 * simulated MCUboot device (tests/sim/smp_device: the line full duplex and
 * paced per byte at baud/10 bytes per second, 8N1; four 384-byte buffers;
 * flash erase and write times of an nRF52840, its datasheet's maxima),
 * pushes one image, and times the adapter's write (the upload: from the
 * first request to the answer that takes the last byte).
 *
 * Reference, measured in the same run and interleaved with the pushes: the
 * line alone -- the simulator in --raw-count mode takes N raw bytes through
 * the same pacing code and answers when the last one is in.  Printed per
 * baud rate: the medians over the repetitions, the goodput as a ratio of
 * the measured line rate, and the min-max of the per-repetition ratios.
 * Goal: >= 0.65 of the line rate at 115200 baud.
 *
 * The model leaves out: a real UART's and USB-serial adapter's latency
 * (the pty hands bytes over at once), Zephyr's own processing time per
 * request (only the flash is timed), and the reset and test boot after the
 * upload.  Not a test: it asserts nothing about speed.
 *
 *   smp_goodput PLUGIN SIMULATOR [IMAGE_BYTES] [REPETITIONS]
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"

#define REPS_MAX 20

static char g_path[256];

static void host_log(void *ctx, int level, const char *msg)
{
	if (level <= FERRY_LOG_WARNING)
		fprintf(stderr, "  adapter: %s\n", msg);
}

static const char *host_config(void *ctx, const char *key)
{
	if (!strcmp(key, "ports[0].path"))
		return g_path;
	if (!strcmp(key, "ports[0].vendor_id") || !strcmp(key, "ports[0].class_id"))
		return "bench";
	if (!strcmp(key, "ports[0].component"))
		return "mcu";
	if (!strcmp(key, "timeout_ms"))
		return "5000";
	return NULL;
}

static int64_t now_ms(void *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
}

static bool cancelled(void *ctx)
{
	return false;
}

static double run(const ferry_adapter_v2 *t, const char *sim, long baud, long size, const char *dir)
{
	char rate[32], image[300], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	pid_t pid;
	ferry_host_v1 host = {.size = sizeof(host), .log = host_log, .config = host_config, .now_ms = now_ms};
	ferry_session_host_v1 sh = {.size = sizeof(sh), .progress = progress, .cancelled = cancelled};
	ferry_device_v1 dev[2];
	size_t n = 0;
	void *state = NULL, *sess = NULL;
	uint64_t off = 0;
	char cmdline[800];
	struct stat sb;

	snprintf(g_path, sizeof(g_path), "%s/tty", dir);
	snprintf(image, sizeof(image), "%s/image.bin", dir);
	snprintf(rate, sizeof(rate), "%ld", baud / 10);
	snprintf(cmdline, sizeof(cmdline), "%s --make-image 1.1.0 %ld %s", sim, size, image);
	if (system(cmdline) != 0 || stat(image, &sb))
		return -1;
	if ((pid = fork()) == 0) {
		execl(sim, sim, "--link", g_path, "--version", "1.0.0", "--rate", rate, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && access(g_path, F_OK); i++)
		usleep(20000);
	memset(dev, 0, sizeof(dev));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = image, .length = (uint64_t)sb.st_size,
			      .format = "mcuboot", .version = "1.1.0"};
	double secs = -1;
	if (t->init(&host, &state, detail) == 0 && t->discover(state, dev, 2, &n, detail) == 0 && n == 1 &&
	    t->open(state, &dev[0], &sh, &sess, detail) == 0 && t->check(sess, &img, detail) == 0) {
		int64_t t0 = now_ms(NULL);
		if (t->write(sess, &img, &off, detail) == 0)
			secs = (double)(now_ms(NULL) - t0) / 1000.0;
	}
	if (secs < 0)
		fprintf(stderr, "  failed: %s\n", detail);
	if (sess)
		t->close(sess);
	if (state)
		t->fini(state);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return secs < 0 ? -1 : (double)sb.st_size / secs;
}

/* The line alone: size raw bytes into the simulator at the same rate, until
 * it says the last one is in.  Bytes per second, or -1. */
static double line_rate(const char *sim, long baud, long size, const char *dir)
{
	char rate[32], count[32];
	pid_t pid;
	double bps = -1;

	snprintf(g_path, sizeof(g_path), "%s/raw", dir);
	snprintf(rate, sizeof(rate), "%ld", baud / 10);
	snprintf(count, sizeof(count), "%ld", size);
	if ((pid = fork()) == 0) {
		execl(sim, sim, "--link", g_path, "--rate", rate, "--raw-count", count, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && access(g_path, F_OK); i++)
		usleep(20000);
	int fd = open(g_path, O_RDWR | O_NOCTTY);
	struct termios t;
	if (fd >= 0 && tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(fd, TCSANOW, &t);
		char *buf = calloc(1, (size_t)size);
		int64_t t0 = now_ms(NULL);
		long sent = 0;
		while (buf && sent < size) {
			ssize_t w = write(fd, buf + sent, (size_t)(size - sent));
			if (w <= 0)
				break;
			sent += w;
		}
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		char k = 0;
		if (sent == size && poll(&pf, 1, 600000) == 1 && read(fd, &k, 1) == 1 && k == 'K')
			bps = (double)size / ((double)(now_ms(NULL) - t0) / 1000.0);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return bps;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(v[0]), by_value);
	return v[(n - 1) / 2];
}

int main(int argc, char **argv)
{
	static const long bauds[] = {115200, 1000000};
	char dir[] = "/tmp/ferry-bench-XXXXXX";
	long size = argc > 3 ? atol(argv[3]) : 65536;
	int reps = argc > 4 ? atoi(argv[4]) : 5;
	if (reps < 1 || reps > REPS_MAX)
		reps = reps < 1 ? 1 : REPS_MAX;
	void *dl;
	const ferry_adapter_v2 *(*table)(void);

	if (argc < 3) {
		fprintf(stderr, "usage: smp_goodput PLUGIN SIMULATOR [IMAGE_BYTES]\n");
		return 2;
	}
	if (!(dl = dlopen(argv[1], RTLD_NOW)) || !(*(void **)&table = dlsym(dl, "ferry_adapter_table_v2")) ||
	    !mkdtemp(dir)) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 1;
	}
	printf("serial-smp push goodput, %ld-byte image, simulated MCUboot device, %d repetitions interleaved\n", size,
	       reps);
	for (size_t i = 0; i < sizeof(bauds) / sizeof(bauds[0]); i++) {
		double line[REPS_MAX], got[REPS_MAX], ratio[REPS_MAX];
		int ok = 0;
		for (int r = 0; r < reps; r++) {
			line[ok] = line_rate(argv[2], bauds[i], size, dir);
			got[ok] = run(table(), argv[2], bauds[i], size, dir);
			if (line[ok] > 0 && got[ok] > 0) {
				ratio[ok] = got[ok] / line[ok];
				ok++;
			}
		}
		if (!ok) {
			printf("  %7ld baud: failed\n", bauds[i]);
			continue;
		}
		double ml = median(line, ok), mg = median(got, ok);
		qsort(ratio, (size_t)ok, sizeof(ratio[0]), by_value);
		printf("  %7ld baud: %8.0f B/s of a %8.0f B/s line (measured; nominal %.0f) = %.2f of the line rate "
		       "(per repetition %.2f-%.2f)\n",
		       bauds[i], mg, ml, bauds[i] / 10.0, mg / ml, ratio[0], ratio[ok - 1]);
		printf("row: | serial-smp upload, %ld baud | %.0f B/s | the line alone, %.0f B/s | %.2f | %.2f-%.2f | %s |\n",
		       bauds[i], mg, ml, mg / ml, ratio[0], ratio[ok - 1], bauds[i] == 115200 ? ">= 0.65" : "-");
	}
	printf("  goal: >= 0.65 of the line rate at 115200 baud\n");
	char cmd[100];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
