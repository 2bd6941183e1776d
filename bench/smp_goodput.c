/* Benchmark: serial-smp push goodput over an emulated UART.
 *
 * Loads the real serial-smp plugin the way ferryd does, against the
 * simulated MCUboot device limited to the byte rate of a given baud rate
 * (10 bits per byte: 8N1), pushes one image, and prints the goodput as a
 * ratio of the raw line rate measured in the same run.  Not a test: it
 * asserts nothing about speed.
 *
 *   smp_goodput PLUGIN SIMULATOR [IMAGE_BYTES]
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"

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

int main(int argc, char **argv)
{
	static const long bauds[] = {115200, 1000000};
	char dir[] = "/tmp/ferry-bench-XXXXXX";
	long size = argc > 3 ? atol(argv[3]) : 65536;
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
	printf("serial-smp push goodput, %ld-byte image, simulated MCUboot device\n", size);
	for (size_t i = 0; i < sizeof(bauds) / sizeof(bauds[0]); i++) {
		double line = bauds[i] / 10.0, got = run(table(), argv[2], bauds[i], size, dir);
		if (got < 0)
			printf("  %7ld baud: failed\n", bauds[i]);
		else
			printf("  %7ld baud: %8.0f B/s of a %8.0f B/s line = %.2f of the raw line rate\n", bauds[i], got,
			       line, got / line);
	}
	char cmd[100];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
