/* Benchmark: usb-dfu push goodput against the simulated DFU device.
 *
 * For each device model (wTransferSize and bwPollTimeout), starts the
 * simulated device, runs the real usb-dfu plugin against it through the
 * real libusb (a child process under umockdev's preload, as ferryd would
 * run), pushes one image, and prints the goodput as a ratio of the device's
 * modeled limit: a device busy bwPollTimeout after every block cannot take
 * more than wTransferSize / bwPollTimeout.  Goodput is timed from the first
 * acknowledged block to the last, so detach and re-enumeration do not count.
 * Not a test: it asserts nothing about speed.
 *
 *   dfu_goodput PLUGIN SIMULATOR [IMAGE_BYTES]
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"

static const char *g_transfer = "1024";
static int64_t g_first_ms, g_last_ms;
static uint64_t g_first_done, g_last_done;

static int64_t now_ms(void *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
	if (!g_first_ms) {
		g_first_ms = now_ms(NULL);
		g_first_done = done;
	}
	g_last_ms = now_ms(NULL);
	g_last_done = done;
}

static bool cancelled(void *ctx)
{
	return false;
}

/* The child: push IMAGE with the plugin; print the goodput in B/s. */
static int push(const char *plugin, const char *image)
{
	void *dl = dlopen(plugin, RTLD_NOW);
	const ferry_adapter_v2 *(*table)(void);
	ferry_host_v1 host = {.size = sizeof(host), .log = host_log, .config = host_config, .now_ms = now_ms};
	ferry_session_host_v1 sh = {.size = sizeof(sh), .progress = progress, .cancelled = cancelled};
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_device_v1 dev[2];
	void *state = NULL, *sess = NULL;
	size_t n = 0;
	uint64_t off = 0;
	struct stat sb;
	int rc = 1;

	if (!dl || !(*(void **)&table = dlsym(dl, "ferry_adapter_table_v2")) || stat(image, &sb))
		return 1;
	const ferry_adapter_v2 *t = table();
	memset(dev, 0, sizeof(dev));
	ferry_image_v1 img = {.size = sizeof(img),
	                      .component = "mcu",
	                      .path = image,
	                      .length = (uint64_t)sb.st_size,
	                      .format = "dfu",
	                      .version = "1.1.0"};
	if (t->init(&host, &state, detail) == 0 && t->discover(state, dev, 2, &n, detail) == 0 && n == 1 &&
	    t->open(state, &dev[0], &sh, &sess, detail) == 0 && t->check(sess, &img, detail) == 0 &&
	    t->write(sess, &img, &off, detail) == 0 && t->abort(sess, &img, detail) == 0 && g_last_ms > g_first_ms) {
		printf("%.1f\n", (double)(g_last_done - g_first_done) * 1000.0 / (double)(g_last_ms - g_first_ms));
		rc = 0;
	}
	if (rc)
		fprintf(stderr, "  failed: %s\n", detail[0] ? detail : "no device");
	if (sess)
		t->close(sess);
	if (state)
		t->fini(state);
	return rc;
}

static double run(const char *self, const char *plugin, const char *sim, const char *dir, const char *image,
                  const char *xfer, const char *poll)
{
	char root_file[300], root[300] = "", out[64] = "";
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
	for (int i = 0; i < 200 && access(root_file, F_OK); i++)
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
		g_transfer = xfer;
		execl(self, self, "--push", plugin, image, xfer, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	ssize_t r = read(fd[0], out, sizeof(out) - 1);
	close(fd[0]);
	waitpid(child, NULL, 0);
	kill(sim_pid, SIGTERM);
	waitpid(sim_pid, NULL, 0);
	return r > 0 ? atof(out) : -1;
}

int main(int argc, char **argv)
{
	static const char *models[][2] = {{"64", "1"}, {"1024", "5"}, {"2048", "8"}, {"4096", "20"}};
	char dir[] = "/tmp/ferry-dfu-bench-XXXXXX", image[300], cmd[700];
	long size = argc > 3 ? atol(argv[3]) : 262144;

	if (argc == 5 && !strcmp(argv[1], "--push")) {
		g_transfer = argv[4];
		return push(argv[2], argv[3]);
	}
	if (argc < 3 || !mkdtemp(dir)) {
		fprintf(stderr, "usage: dfu_goodput PLUGIN SIMULATOR [IMAGE_BYTES]\n");
		return 2;
	}
	snprintf(image, sizeof(image), "%s/fw.dfu", dir);
	snprintf(cmd, sizeof(cmd), "%s --make-image 1.1.0 %ld %s && dfu-suffix -v 1209 -p 0001 -a %s >/dev/null",
	         argv[2], size, image, image);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make the image (is dfu-suffix installed?)\n");
		return 1;
	}
	printf("usb-dfu push goodput, %ld-byte image, simulated DFU 1.1 device behind libusb\n", size);
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		double limit = atof(models[i][0]) * 1000.0 / atof(models[i][1]);
		double got = run("/proc/self/exe", argv[1], argv[2], dir, image, models[i][0], models[i][1]);
		if (got < 0)
			printf("  %4s-byte blocks, %2s ms poll: failed\n", models[i][0], models[i][1]);
		else
		{
			printf("  %4s-byte blocks, %2s ms poll: %9.0f B/s of a modeled %9.0f B/s = %.2f of the limit\n",
			       models[i][0], models[i][1], got, limit, got / limit);
			printf("row: | usb-dfu download, %s-byte blocks, %s ms poll | %.0f B/s | modeled limit %.0f B/s "
			       "(without control-transfer time) | %.2f | one run | %s |\n",
			       models[i][0], models[i][1], got, limit, got / limit,
			       !strcmp(models[i][0], "1024") ? ">= 0.95" : "-");
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
