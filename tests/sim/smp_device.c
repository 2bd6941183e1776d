/* A simulated MCU on the far end of a pseudo-terminal: a Zephyr application
 * with mcumgr over the serial console, under MCUboot with two slots.  The
 * device itself is mcu.c; this file is its UART: the mcumgr serial framing
 * (see adapters/smp/smp.h), the line rate, and what a reset does to the line
 * (the device is away for a moment, and whatever was in flight is lost).
 *
 * The line is full duplex and paced per byte at --rate: each byte is taken
 * from the host, or handed to it, at the time the line would have finished
 * carrying it (an absolute schedule, so pauses do not add up), in groups of
 * at most PACE_GROUP bytes.  Requests go into the device's buffers
 * (buf_count of them: one is kept for the answer being built) while the
 * device works on the oldest; a request that finds them full is dropped,
 * as Zephyr's mcumgr drops a frame it has no buffer for.  Answers go out
 * byte by byte while the device waits (Zephyr's UART transport polls them
 * out), so the device takes the next request only after it answered.
 *
 * Faults, each switched on from the command line, for the tests:
 *   --corrupt-every K  damage every K-th response frame
 *   --rate BPS         bytes per second on the wire (emulates a baud rate)
 *   and the MCU's own (mcu.h): --reset-at N, --drop-every K, --stall-ms MS,
 *   --refuse-confirm, --boot-fails, --reset-delay-ms MS, --lose-reset N,
 *   --buf-size N, --buf-count N, --flash-erase-ms MS, --flash-write-us US,
 *   --vanish-on-confirm.
 *
 *   smp_device --link PATH --rate BPS --raw-count N
 *       the line alone, for the benchmark's reference: takes N bytes at
 *       the paced rate, then answers "K\n", and again.
 *
 *   smp_device --link PATH --version 1.0.0 [faults]
 *       creates a pty, links PATH to its slave side, and serves forever;
 *       the running image is a generated one of the given version.
 *   smp_device --make-image VERSION SIZE OUT [SEED]
 *       writes an MCUboot image (header, payload, SHA256 TLV) for tests;
 *       with a SEED, the payload is the same for every version.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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

/* Bytes paced at a time: 2.8 ms at 115200 baud. */
#define PACE_GROUP 32
/* The most requests waiting in the device's buffers. */
#define QUEUE_MAX 16

/* The line: one per simulator. */
typedef struct uart {
	int fd;
	long corrupt_every, rate;
	long raw_count; /* > 0: the line alone (see above) */
	unsigned long responses;
	unsigned reset_ms;
	mcu dev;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* requests in the device's buffers, oldest first */
	uint8_t *q[QUEUE_MAX];
	size_t qlen[QUEUE_MAX];
	unsigned qhead, qn;
	bool busy;           /* the device works on one more, taken out of the queue */
	bool flush_rx;       /* the frame decoder starts over */
	int64_t away_until;  /* ns: the device resets; what arrives until then is lost */
	int64_t tx_free;     /* ns: when the line to the host is free (device's thread) */
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

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait until the line has carried n more bytes after *line_free (or after
 * now, if it was idle), and note when that is. */
static void pace(int64_t *line_free, size_t n, long rate)
{
	if (rate <= 0)
		return;
	int64_t start = now_ns();
	/* bytes that were waiting while this thread slept go on the line right
	 * after the last ones: the wake-up's own lateness (well under a
	 * millisecond) is not added to the line's time */
	if (*line_free > start - 1000000)
		start = *line_free;
	*line_free = start + (int64_t)n * 1000000000 / rate;
	struct timespec ts = {*line_free / 1000000000, *line_free % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stopping)
		;
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
		size_t chunk = e - off < PACE_GROUP ? e - off : PACE_GROUP;
		pace(&u->tx_free, chunk, u->rate); /* a byte reaches the host once carried */
		ssize_t w = write(u->fd, enc + off, chunk);
		if (w < 0 && errno != EAGAIN && errno != EIO)
			return;
		if (w > 0)
			off += (size_t)w;
		else
			sleep_ms(1);
	}
}

/* The device is away for a while; what was on the line, and in its
 * buffers, is gone. */
static void uart_reset(void *ctx)
{
	uart *u = ctx;
	tcdrain(u->fd);
	pthread_mutex_lock(&u->lock);
	u->away_until = now_ns() + (int64_t)u->reset_ms * 1000000;
	while (u->qn) {
		free(u->q[u->qhead]);
		u->qhead = (u->qhead + 1) % QUEUE_MAX;
		u->qn--;
	}
	u->flush_rx = true;
	pthread_mutex_unlock(&u->lock);
	sleep_ms(u->reset_ms);
	tcflush(u->fd, TCIOFLUSH);
	mcu_boot(&u->dev);
}

/* The receiving side of the line: bytes at the paced rate into the frame
 * decoder, whole requests into the device's buffers. */
static void *receive(void *arg)
{
	uart *u = arg;
	smp_serial_rx *rx = malloc(sizeof(*rx));
	uint8_t buf[PACE_GROUP];
	int64_t line_free = 0;
	long raw = 0;

	if (!rx)
		die("malloc");
	smp_serial_rx_init(rx);
	while (!stopping) {
		struct pollfd p = {.fd = u->fd, .events = POLLIN};
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t n = read(u->fd, buf, sizeof(buf));
		if (n <= 0) { /* nobody has the slave open: wait */
			sleep_ms(20);
			continue;
		}
		pace(&line_free, (size_t)n, u->rate);
		if (u->raw_count > 0) {
			if ((raw += n) >= u->raw_count) {
				raw -= u->raw_count;
				if (write(u->fd, "K\n", 2) != 2)
					fprintf(stderr, "smp_device: the raw answer was not written\n");
			}
			continue;
		}
		pthread_mutex_lock(&u->lock);
		bool away = now_ns() < u->away_until;
		if (u->flush_rx) {
			smp_serial_rx_init(rx);
			u->flush_rx = false;
		}
		pthread_mutex_unlock(&u->lock);
		if (away)
			continue;
		for (ssize_t i = 0; i < n; i++) {
			size_t len;
			if (smp_serial_feed(rx, buf[i], &len) != 1)
				continue;
			pthread_mutex_lock(&u->lock);
			if (now_ns() < u->away_until) { /* a reset began while it came */
				pthread_mutex_unlock(&u->lock);
				break;
			}
			/* one buffer stays for the answer being built */
			unsigned room = u->dev.buf_count > 1 ? u->dev.buf_count - 1 : 1;
			if (room > QUEUE_MAX)
				room = QUEUE_MAX;
			uint8_t *copy = u->qn + u->busy < room ? malloc(len) : NULL;
			if (copy) {
				memcpy(copy, rx->pkt, len);
				unsigned at = (u->qhead + u->qn) % QUEUE_MAX;
				u->q[at] = copy;
				u->qlen[at] = len;
				u->qn++;
				pthread_cond_broadcast(&u->cond);
			} else {
				fprintf(stderr, "smp_device: no free buffer for a request of %zu bytes; dropped\n", len);
			}
			pthread_mutex_unlock(&u->lock);
		}
	}
	free(rx);
	return NULL;
}

static int serve(uart *u, const char *link)
{
	struct termios t;
	pthread_t rx_thread;

	u->fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (u->fd < 0 || grantpt(u->fd) || unlockpt(u->fd))
		die("pty");
	tcgetattr(u->fd, &t);
	cfmakeraw(&t);
	tcsetattr(u->fd, TCSANOW, &t);
	unlink(link);
	if (symlink(ptsname(u->fd), link))
		die("symlink");
	fprintf(stderr, "smp_device: %s -> %s, running %s\n", link, ptsname(u->fd), u->dev.s[0].version);
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	if (pthread_create(&rx_thread, NULL, receive, u))
		die("pthread_create");
	/* the device: its oldest request, or what it has to do by itself */
	pthread_mutex_lock(&u->lock);
	while (!stopping) {
		long due = mcu_due_ms(&u->dev);
		if (!u->qn) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			long wait = due >= 0 && due < 200 ? due : 200;
			until.tv_nsec += wait * 1000000L;
			until.tv_sec += until.tv_nsec / 1000000000L;
			until.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&u->cond, &u->lock, &until);
		}
		pthread_mutex_unlock(&u->lock);
		mcu_tick(&u->dev); /* a reset the device answered a moment ago (it empties the buffers) */
		pthread_mutex_lock(&u->lock);
		if (!u->qn)
			continue;
		/* the oldest request: its buffer stays taken (busy) until answered */
		uint8_t *pkt = u->q[u->qhead];
		size_t len = u->qlen[u->qhead];
		u->qhead = (u->qhead + 1) % QUEUE_MAX;
		u->qn--;
		u->busy = true;
		pthread_mutex_unlock(&u->lock);
		mcu_handle(&u->dev, pkt, len);
		free(pkt);
		pthread_mutex_lock(&u->lock);
		u->busy = false;
	}
	pthread_mutex_unlock(&u->lock);
	pthread_join(rx_thread, NULL);
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
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "--make-image")) {
		if (argc == 6) /* a seed: the same payload for every version, as successive builds nearly are */
			srand((unsigned)strtoul(argv[5], NULL, 10));
		return mcu_make_image_file(argv[2], argv[3], argv[4]);
	}
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
		else if (!strcmp(a, "--raw-count") && v) u.raw_count = atol(argv[++i]);
		else {
			fprintf(stderr, "smp_device: unknown argument %s\n", a);
			return 2;
		}
	}
	if (!link) {
		fprintf(stderr, "usage: smp_device --link PATH [--version V] [faults] | --make-image V SIZE OUT [SEED]\n");
		return 2;
	}
	return serve(&u, link);
}
