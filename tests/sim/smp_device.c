/* A simulated MCU on the far end of a pseudo-terminal: a Zephyr application
 * with mcumgr over the serial console, under MCUboot with two slots.  The
 * device itself is mcu.c; this file is its UART: the mcumgr serial framing
 * (see adapters/smp/smp.h), the line rate, and what a reset does to the line
 * (the device is away for a moment, and whatever was in flight is lost).
 *
 * Faults, each switched on from the command line, for the tests:
 *   --corrupt-every K  damage every K-th response frame
 *   --rate BPS         bytes per second on the wire (emulates a baud rate)
 *   and the MCU's own (mcu.h): --reset-at N, --drop-every K, --stall-ms MS,
 *   --refuse-confirm, --boot-fails, --reset-delay-ms MS, --lose-reset N,
 *   --buf-size N, --vanish-on-confirm.
 *
 *   smp_device --link PATH --version 1.0.0 [faults]
 *       creates a pty, links PATH to its slave side, and serves forever;
 *       the running image is a generated one of the given version.
 *   smp_device --make-image VERSION SIZE OUT
 *       writes an MCUboot image (header, payload, SHA256 TLV) for tests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mcu.h"
#include "smp.h"

static volatile sig_atomic_t stopping;

/* The line: one per simulator. */
typedef struct uart {
	int fd;
	long corrupt_every, rate;
	unsigned long responses;
	unsigned reset_ms;
	mcu dev;
} uart;

static void die(const char *m)
{
	perror(m);
	exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void uart_send(void *ctx, const uint8_t *pkt, size_t n)
{
	uart *u = ctx;
	uint8_t enc[SMP_SERIAL_ENCODED_MAX(SMP_PACKET_MAX)];
	size_t e = smp_serial_encode(pkt, n, enc, sizeof(enc));

	u->responses++;
	if (u->corrupt_every > 0 && u->responses % (unsigned long)u->corrupt_every == 0)
		enc[e / 2] = enc[e / 2] == 'A' ? 'B' : 'A';
	for (size_t off = 0; off < e;) {
		size_t chunk = u->rate > 0 ? (size_t)(u->rate / 100 > 0 ? u->rate / 100 : 1) : e;
		if (chunk > e - off)
			chunk = e - off;
		ssize_t w = write(u->fd, enc + off, chunk);
		if (w < 0 && errno != EAGAIN && errno != EIO)
			return;
		if (w > 0)
			off += (size_t)w;
		if (u->rate > 0)
			sleep_ms(10);
	}
}

/* The device is away for a while; what was on the line is gone. */
static void uart_reset(void *ctx)
{
	uart *u = ctx;
	tcdrain(u->fd);
	sleep_ms(u->reset_ms);
	tcflush(u->fd, TCIOFLUSH);
	mcu_boot(&u->dev);
}

static int serve(uart *u, const char *link)
{
	smp_serial_rx *rx = malloc(sizeof(*rx));
	struct termios t;
	uint8_t buf[4096];

	u->fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (!rx || u->fd < 0 || grantpt(u->fd) || unlockpt(u->fd))
		die("pty");
	tcgetattr(u->fd, &t);
	cfmakeraw(&t);
	tcsetattr(u->fd, TCSANOW, &t);
	unlink(link);
	if (symlink(ptsname(u->fd), link))
		die("symlink");
	fprintf(stderr, "smp_device: %s -> %s, running %s\n", link, ptsname(u->fd), u->dev.s[0].version);
	smp_serial_rx_init(rx);
	while (!stopping) {
		struct pollfd p = {.fd = u->fd, .events = POLLIN};
		long due = mcu_due_ms(&u->dev);
		int ready = poll(&p, 1, due >= 0 && due < 1000 ? (int)due : 1000);
		mcu_tick(&u->dev); /* a reset the device answered a moment ago */
		if (ready <= 0)
			continue;
		/* With a rate, take at most 10 ms worth of bytes at a time: the
		 * host's writes then drain as slowly as a real UART would. */
		size_t cap = u->rate > 0 ? (size_t)(u->rate / 100 > 0 ? u->rate / 100 : 1) : sizeof(buf);
		ssize_t n = read(u->fd, buf, cap < sizeof(buf) ? cap : sizeof(buf));
		if (n > 0 && u->rate > 0)
			sleep_ms(10);
		if (n <= 0) { /* nobody has the slave open: wait */
			sleep_ms(20);
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			size_t len;
			if (smp_serial_feed(rx, buf[i], &len) == 1)
				mcu_handle(&u->dev, rx->pkt, len);
		}
	}
	/* unplugged: the link goes with the device.  Left behind, it would
	 * point at whatever pty gets this number next -- another test's
	 * device, which would then answer for this one. */
	char target[256];
	ssize_t tl = readlink(link, target, sizeof(target) - 1);
	if (tl > 0) {
		target[tl] = '\0';
		if (!strcmp(target, ptsname(u->fd)))
			unlink(link);
	}
	free(rx);
	return 0;
}

static void on_stop(int sig)
{
	stopping = 1;
}

int main(int argc, char **argv)
{
	static uart u = {.reset_ms = 300};
	struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: poll returns */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	const char *link = NULL, *version = "1.0.0";
	const mcu_io io = {.ctx = &u, .send = uart_send, .reset = uart_reset};

	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	if (argc == 5 && !strcmp(argv[1], "--make-image"))
		return mcu_make_image_file(argv[2], argv[3], argv[4]);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--version") && i + 1 < argc)
			version = argv[i + 1];
	mcu_init(&u.dev, version, &io);
	u.dev.frame_overhead = 4; /* the serial frame's length and CRC share the buffer */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (mcu_option(&u.dev, argc, argv, &i))
			continue;
		if (!strcmp(a, "--link") && v) link = argv[++i];
		else if (!strcmp(a, "--version") && v) i++;
		else if (!strcmp(a, "--corrupt-every") && v) u.corrupt_every = atol(argv[++i]);
		else if (!strcmp(a, "--rate") && v) u.rate = atol(argv[++i]);
		else {
			fprintf(stderr, "smp_device: unknown argument %s\n", a);
			return 2;
		}
	}
	if (!link) {
		fprintf(stderr, "usage: smp_device --link PATH [--version V] [faults] | --make-image V SIZE OUT\n");
		return 2;
	}
	return serve(&u, link);
}
