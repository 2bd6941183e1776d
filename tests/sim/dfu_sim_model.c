/* The simulated DFU device's protocol: DFU 1.1 class requests in run-time
 * and DFU mode, ST's DfuSe dialect, staging, flash and manifestation.  See
 * dfu_sim.h for what it models. */
#include "dfu_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	APP_IDLE,
	APP_DETACH,
	IDLE,
	DNLOAD_SYNC,
	DNBUSY,
	DNLOAD_IDLE,
	MANIFEST_SYNC,
	MANIFEST,
	MANIFEST_WAIT_RESET,
	UPLOAD_IDLE,
	ERROR
};
enum { DETACH, DNLOAD, UPLOAD, GETSTATUS, CLRSTATUS, GETSTATE, ABORT };
enum {
	OK = 0,
	ERR_WRITE = 3,
	ERR_PROG = 6,
	ERR_VERIFY = 7,
	ERR_ADDRESS = 8,
	ERR_NOTDONE = 9,
	ERR_UNKNOWN = 14,
	ERR_STALLEDPKT = 15
};

int64_t sim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int b = 0; b < 8; b++)
			c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
	}
	return ~c;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

size_t sim_make_image(const char *version, uint16_t pid, size_t size, uint8_t *out, size_t cap)
{
	unsigned a, b, c;
	uint32_t seed = 2166136261u;

	if (sscanf(version, "%u.%u.%u", &a, &b, &c) != 3 || a > 255 || b > 255 || c > 255 || size < SIM_IMG_HDR + 4 ||
	    size > cap)
		return 0;
	memcpy(out, SIM_IMG_MAGIC, 4);
	out[4] = (uint8_t)a, out[5] = (uint8_t)b, out[6] = (uint8_t)c, out[7] = 0;
	out[8] = (uint8_t)pid, out[9] = (uint8_t)(pid >> 8), out[10] = out[11] = 0;
	put32(out + 12, (uint32_t)size);
	for (const char *v = version; *v; v++)
		seed = (seed ^ (uint8_t)*v) * 16777619u;
	for (size_t i = SIM_IMG_HDR; i < size - 4; i++) {
		seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
		out[i] = (uint8_t)seed;
	}
	put32(out + size - 4, crc32_ieee(out, size - 4));
	return size;
}

bool sim_parse_image(const uint8_t *p, size_t len, sim_fw *out)
{
	uint32_t n;

	memset(out, 0, sizeof(*out));
	if (len < SIM_IMG_HDR + 4 || memcmp(p, SIM_IMG_MAGIC, 4))
		return false;
	n = le32(p + 12);
	if (n < SIM_IMG_HDR + 4 || n > len || crc32_ieee(p, n - 4) != le32(p + n - 4))
		return false;
	snprintf(out->version, sizeof(out->version), "%u.%u.%u", p[4], p[5], p[6]);
	out->pid = (uint16_t)(p[8] | p[9] << 8);
	out->len = n;
	out->valid = true;
	return true;
}

/* The firmware a DfuSe device would start: the image at the flash base. */
static bool flash_app(const dfu_sim *d, sim_fw *out)
{
	return sim_parse_image(d->flash, SIM_FLASH_SIZE, out);
}

int sim_init(dfu_sim *d, const char *version)
{
	uint8_t img[4096];
	size_t n = sim_make_image(version, 0, sizeof(img), img, sizeof(img));

	if (!n || !(d->staging = malloc(SIM_STAGING_MAX)) || !(d->flash = malloc(SIM_FLASH_SIZE)) ||
	    !(d->written = calloc(1, SIM_FLASH_SIZE)) || !(d->fw.data = malloc(SIM_STAGING_MAX)))
		return -1;
	uint8_t *buf = d->fw.data;
	memcpy(buf, img, n);
	sim_parse_image(buf, n, &d->fw);
	d->fw.data = buf;
	memset(d->flash, 0xFF, SIM_FLASH_SIZE);
	memcpy(d->flash, img, n);
	memset(d->written, 1, n);
	d->state = APP_IDLE;
	return 0;
}

const char *sim_running(const dfu_sim *d)
{
	static sim_fw app;
	if (!d->dfuse)
		return d->fw.valid ? d->fw.version : "";
	return flash_app(d, &app) ? app.version : "";
}

static uint16_t firmware_pid(const dfu_sim *d)
{
	sim_fw app;
	if (!d->dfuse)
		return d->fw.valid && d->fw.pid ? d->fw.pid : d->pid;
	return flash_app(d, &app) && app.pid ? app.pid : d->pid;
}

uint16_t sim_current_pid(const dfu_sim *d)
{
	return d->dfu_mode ? d->dfu_pid : firmware_pid(d);
}

uint16_t sim_bcd_device(const dfu_sim *d)
{
	unsigned a, b, c;
	if (d->dfu_mode || sscanf(sim_running(d), "%u.%u.%u", &a, &b, &c) != 3 || a > 99 || b > 9 || c > 9)
		return 0x0200;
	return (uint16_t)((a / 10) << 12 | (a % 10) << 8 | b << 4 | c);
}

const char *sim_string(const dfu_sim *d, uint8_t i)
{
	switch (i) {
	case 1: return "ferry";
	case 2: return d->dfu_mode ? "ferry simulated DFU bootloader" : "ferry simulated DFU device";
	case 3: return d->serial[0] ? d->serial : NULL;
	case 4: return d->dfu_mode ? NULL : sim_running(d);
	case 5: return d->dfu_mode ? (d->dfuse ? SIM_LAYOUT : "ferry firmware slot") : NULL;
	case 6: return d->dfu_mode && d->dfuse ? SIM_OPTION_LAYOUT : NULL;
	default: return NULL;
	}
}

/* A request the device does not accept: STALL, and in DFU mode dfuERROR. */
static int stall(dfu_sim *d, bool violation, const char *why)
{
	if (violation) {
		d->violations++;
		fprintf(stderr, "dfu-sim: protocol violation: %s (state %u)\n", why, d->state);
	}
	if (d->dfu_mode) {
		d->state = ERROR;
		d->status = ERR_STALLEDPKT;
	}
	return -1;
}

static int reply(dfu_sim *d, uint8_t *out, uint8_t status, uint32_t poll, uint8_t state)
{
	out[0] = status;
	out[1] = (uint8_t)poll, out[2] = (uint8_t)(poll >> 8), out[3] = (uint8_t)(poll >> 16);
	out[4] = state;
	out[5] = 0;
	return 6;
}

static int runtime_request(dfu_sim *d, uint8_t req, uint16_t value, uint16_t len, uint8_t *data, sim_action *act)
{
	int64_t now = sim_now_ms();

	if (d->state == APP_DETACH && !d->detach_never && now > d->detach_deadline)
		d->state = APP_IDLE; /* no reset came in time */
	switch (req) {
	case DETACH:
		d->detaches++;
		d->state = APP_DETACH;
		d->detach_deadline = now + (value < d->detach_timeout_ms ? value : d->detach_timeout_ms);
		if (d->will_detach && !d->detach_never)
			*act = SIM_TO_DFU;
		return 0;
	case GETSTATUS:
		if (len < 6)
			return stall(d, true, "GETSTATUS shorter than 6 bytes");
		return reply(d, data, OK, 0, d->state);
	case GETSTATE:
		if (len < 1)
			return stall(d, true, "GETSTATE without room");
		data[0] = d->state;
		return 1;
	default: return -1; /* run-time mode stalls the rest, and stays put */
	}
}

static bool flash_range(uint32_t addr, uint32_t len)
{
	return addr >= SIM_FLASH_BASE && (uint64_t)addr + len <= (uint64_t)SIM_FLASH_BASE + SIM_FLASH_SIZE;
}

/* The memory of the selected alternate setting: flash (0) or option bytes (1). */
static bool in_memory(const dfu_sim *d, uint32_t addr, uint32_t len)
{
	if (d->alt == 1)
		return addr >= SIM_OPTION_BASE && (uint64_t)addr + len <= (uint64_t)SIM_OPTION_BASE + SIM_OPTION_SIZE;
	return flash_range(addr, len);
}

/* The STM32F4 pages: 4 x 16K, 1 x 64K, 7 x 128K. */
static void page_of(uint32_t off, uint32_t *start, uint32_t *size)
{
	const uint32_t k = 1024;
	if (off < 64 * k) {
		*size = 16 * k;
		*start = off / *size * *size;
	} else if (off < 128 * k) {
		*size = 64 * k;
		*start = 64 * k;
	} else {
		*size = 128 * k;
		*start = 128 * k + (off - 128 * k) / *size * *size;
	}
}

/* The pending operation, now that its busy time is over: its status. */
static uint8_t apply(dfu_sim *d)
{
	uint32_t start, size, off;
	long block = (long)d->next_block - 1;

	switch (d->pend) {
	case PEND_BLOCK:
		if (block == d->error_block)
			return d->error_status;
		if (!d->dfuse) {
			if (d->staged + d->pend_len > SIM_STAGING_MAX)
				return ERR_ADDRESS;
			memcpy(d->staging + d->staged, d->pend_data, d->pend_len);
			d->staged += d->pend_len;
			return OK;
		}
		if (!in_memory(d, d->pend_addr, d->pend_len))
			return ERR_ADDRESS;
		if (d->alt == 1) {
			/* option bytes are written in place, no erase */
			memcpy(d->option + (d->pend_addr - SIM_OPTION_BASE), d->pend_data, d->pend_len);
			d->option_bytes += d->pend_len;
			return OK;
		}
		off = d->pend_addr - SIM_FLASH_BASE;
		for (uint32_t i = 0; i < d->pend_len; i++)
			if (d->written[off + i]) {
				fprintf(stderr, "dfu-sim: programming 0x%08x, which was not erased\n",
				        d->pend_addr + i);
				return ERR_PROG;
			}
		memcpy(d->flash + off, d->pend_data, d->pend_len);
		memset(d->written + off, 1, d->pend_len);
		return OK;
	case PEND_SET_ADDRESS:
		if (!in_memory(d, d->pend_addr, 1))
			return ERR_ADDRESS;
		d->pointer = d->pend_addr;
		return OK;
	case PEND_ERASE:
		if (d->alt != 0 || !flash_range(d->pend_addr, 1))
			return ERR_ADDRESS;
		page_of(d->pend_addr - SIM_FLASH_BASE, &start, &size);
		memset(d->flash + start, 0xFF, size);
		memset(d->written + start, 0, size);
		d->erases++;
		return OK;
	case PEND_MASS_ERASE:
		memset(d->flash, 0xFF, SIM_FLASH_SIZE);
		memset(d->written, 0, SIM_FLASH_SIZE);
		d->erases++;
		return OK;
	default: return OK;
	}
}

static void discard(dfu_sim *d)
{
	d->staged = 0;
	d->next_block = 0;
	d->pend = PEND_NONE;
}

static int getstatus(dfu_sim *d, uint8_t *data, uint16_t len, sim_action *act)
{
	int64_t now = sim_now_ms();
	uint32_t dur;
	sim_fw img;

	if (len < 6)
		return stall(d, true, "GETSTATUS shorter than 6 bytes");
	switch (d->state) {
	case DNLOAD_SYNC:
		dur = d->pend == PEND_ERASE || d->pend == PEND_MASS_ERASE ? d->erase_ms : d->poll_ms;
		d->busy_until = now + dur;
		d->poll_report = d->bogus_poll ? d->bogus_poll : dur;
		d->stalls_left = d->pend == PEND_ERASE || d->pend == PEND_MASS_ERASE ? d->erase_stalls : 0;
		d->state = DNBUSY;
		return reply(d, data, OK, d->poll_report, DNBUSY);
	case DNBUSY:
		if (d->stalls_left > 0) {
			d->stalls_left--; /* as STM32L4 does while it erases */
			return -1;
		}
		if (now < d->busy_until) {
			d->early_polls++;
			return reply(d, data, OK, (uint32_t)(d->busy_until - now), DNBUSY);
		}
		d->status = apply(d);
		d->pend = PEND_NONE;
		if (d->status != OK) {
			d->errors++;
			d->state = ERROR;
			discard(d);
			return reply(d, data, d->status, 0, ERROR);
		}
		d->state = DNLOAD_IDLE;
		return reply(d, data, OK, 0, DNLOAD_IDLE);
	case MANIFEST_SYNC:
		if (d->dfuse) {
			/* leave: answer, then start the firmware */
			*act = SIM_TO_RUNTIME;
			d->state = MANIFEST;
			return reply(d, data, OK, 0, MANIFEST);
		}
		if (d->committed) {
			d->state = IDLE;
			return reply(d, data, OK, 0, IDLE);
		}
		if (d->manifest_reset) {
			/* the device resets itself before it answers */
			if (!d->verify_fails && sim_parse_image(d->staging, d->staged, &img)) {
				memcpy(d->fw.data, d->staging, img.len);
				img.data = d->fw.data;
				d->fw = img;
			}
			*act = SIM_TO_RUNTIME;
			return -2;
		}
		d->state = MANIFEST;
		d->busy_until = now + d->manifest_ms;
		return reply(d, data, OK, d->manifest_ms, MANIFEST);
	case MANIFEST:
		if (d->silent_manifest && !d->tolerant) {
			/* DFU 1.1 lets an intolerant device stop answering here: it
			 * manifests and then only a bus reset moves it */
			if (!d->verify_fails && sim_parse_image(d->staging, d->staged, &img)) {
				memcpy(d->fw.data, d->staging, img.len);
				img.data = d->fw.data;
				d->fw = img;
				d->committed = true;
			}
			d->state = MANIFEST_WAIT_RESET;
			return -2;
		}
		if (now < d->busy_until) {
			d->early_polls++;
			return reply(d, data, OK, (uint32_t)(d->busy_until - now), MANIFEST);
		}
		if (d->verify_fails || !sim_parse_image(d->staging, d->staged, &img)) {
			d->errors++;
			d->state = ERROR;
			d->status = ERR_VERIFY;
			discard(d);
			return reply(d, data, ERR_VERIFY, 0, ERROR);
		}
		memcpy(d->fw.data, d->staging, img.len);
		img.data = d->fw.data;
		d->fw = img;
		d->committed = true;
		d->state = d->tolerant ? MANIFEST_SYNC : MANIFEST_WAIT_RESET;
		return reply(d, data, OK, 0, d->state);
	case MANIFEST_WAIT_RESET: return -1; /* only a reset moves it now */
	default: return reply(d, data, d->status, 0, d->state);
	}
}

static int dnload(dfu_sim *d, uint16_t value, uint16_t len, const uint8_t *data, sim_action *act)
{
	long block;

	if (len > d->transfer_size)
		return stall(d, true, "DNLOAD longer than wTransferSize");
	if (d->state != IDLE && d->state != DNLOAD_IDLE)
		return stall(d, true, "DNLOAD outside dfuIDLE and dfuDNLOAD-IDLE");
	d->dnloads++;
	if (d->state == IDLE && (len || d->dfuse))
		discard(d), d->committed = false;
	if (d->dfuse && value == 0) {
		/* a command, or with no data the leave request */
		if (len == 5 && (data[0] == 0x21 || data[0] == 0x41)) {
			d->pend = data[0] == 0x21 ? PEND_SET_ADDRESS : PEND_ERASE;
			d->pend_addr = le32(data + 1);
		} else if (len == 1 && data[0] == 0x41) {
			d->pend = PEND_MASS_ERASE;
		} else if (len == 0) {
			d->state = MANIFEST_SYNC;
			return 0;
		} else {
			return stall(d, false, "unknown DfuSe command");
		}
		d->state = DNLOAD_SYNC;
		return 0;
	}
	if (len == 0) {
		if (d->dfuse) {
			d->state = MANIFEST_SYNC; /* leave, as dfu-util sends it (wValue 2) */
			return 0;
		}
		if (d->state == IDLE)
			return stall(d, true, "zero-length DNLOAD with nothing downloaded");
		d->state = MANIFEST_SYNC;
		return 0;
	}
	if (d->dfuse && value == 1)
		return stall(d, true, "DfuSe block number 1");
	if (!d->dfuse && value != (uint16_t)d->next_block) {
		d->violations++;
		fprintf(stderr, "dfu-sim: block %u arrived, %u expected\n", value, (uint16_t)d->next_block);
		return stall(d, false, "");
	}
	block = (long)d->next_block;
	if (block == d->stall_block && !d->fault_done_stall) {
		d->fault_done_stall = true;
		fprintf(stderr, "dfu-sim: stalling block %ld\n", block);
		return stall(d, false, "");
	}
	if (block == d->unplug_block && !d->fault_done_unplug) {
		d->fault_done_unplug = true;
		fprintf(stderr, "dfu-sim: leaving the bus at block %ld\n", block);
		*act = SIM_UNPLUG;
		return -2;
	}
	d->next_block++;
	d->pend = PEND_BLOCK;
	d->pend_addr = d->dfuse ? d->pointer + (uint32_t)(value - 2) * d->transfer_size : 0;
	d->pend_len = len;
	memcpy(d->pend_data, data, len);
	d->data_bytes += len;
	d->state = DNLOAD_SYNC;
	return 0;
}

static int dfu_request(dfu_sim *d, uint8_t req, uint16_t value, uint16_t len, uint8_t *data, sim_action *act)
{
	static const uint8_t commands[] = {0x00, 0x21, 0x41, 0x92};

	if ((d->state == DNBUSY || d->state == MANIFEST) && req != GETSTATUS && sim_now_ms() < d->busy_until)
		return stall(d, true, "a request other than GETSTATUS while busy");
	switch (req) {
	case GETSTATUS: return getstatus(d, data, len, act);
	case GETSTATE:
		if (len < 1)
			return stall(d, true, "GETSTATE without room");
		data[0] = d->state;
		return 1;
	case CLRSTATUS:
		if (d->state != ERROR)
			return stall(d, true, "CLRSTATUS outside dfuERROR");
		d->state = IDLE;
		d->status = OK;
		discard(d);
		return 0;
	case ABORT: /* DFU 1.1's state table: only in the idle states */
		if (d->state != IDLE && d->state != DNLOAD_IDLE && d->state != UPLOAD_IDLE)
			return stall(d, true, "ABORT in a state that does not take it");
		d->state = IDLE;
		discard(d);
		return 0;
	case DNLOAD: return dnload(d, value, len, data, act);
	case UPLOAD:
		if (!d->dfuse || value != 0)
			return stall(d, false, "UPLOAD");
		memcpy(data, commands, len < sizeof(commands) ? len : sizeof(commands));
		return len < sizeof(commands) ? len : (int)sizeof(commands);
	default: return stall(d, true, "a request DFU mode does not take");
	}
}

int sim_control(dfu_sim *d, const uint8_t setup[8], uint8_t *data, sim_action *act)
{
	uint8_t type = setup[0], req = setup[1];
	uint16_t value = (uint16_t)(setup[2] | setup[3] << 8), index = (uint16_t)(setup[4] | setup[5] << 8),
	         len = (uint16_t)(setup[6] | setup[7] << 8);

	*act = SIM_STAY;
	/* class requests to the DFU interface: 1 in run-time mode (after the
	 * vendor interface), 0 in DFU mode */
	if ((type & 0x7f) != 0x21 || index != (d->dfu_mode ? 0 : 1))
		return stall(d, true, "a class request to another interface");
	if ((type & 0x80) != (req == GETSTATUS || req == GETSTATE || req == UPLOAD ? 0x80 : 0))
		return stall(d, true, "a request in the wrong direction");
	return d->dfu_mode ? dfu_request(d, req, value, len, data, act)
	                   : runtime_request(d, req, value, len, data, act);
}

void sim_reset(dfu_sim *d, sim_action *act)
{
	d->resets++;
	*act = SIM_STAY;
	if (d->dfu_mode)
		*act = SIM_TO_RUNTIME; /* the bootloader starts the firmware it holds */
	else if (d->state == APP_DETACH && !d->detach_never && sim_now_ms() <= d->detach_deadline)
		*act = SIM_TO_DFU;
}

void sim_enumerated(dfu_sim *d, bool to_dfu)
{
	sim_fw app;

	d->enumerations++;
	d->status = OK;
	d->alt = 0;
	discard(d);
	d->committed = false;
	d->dfu_mode = to_dfu || (d->dfuse ? !flash_app(d, &app) : !d->fw.valid);
	d->state = d->dfu_mode ? IDLE : APP_IDLE;
	d->pointer = SIM_FLASH_BASE;
}
