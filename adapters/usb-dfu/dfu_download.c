/* Plain DFU and DfuSe downloads, block by block, each block's busy time
 * waited out as the device asks (within bounds), each failure classified so
 * the adapter knows whether starting over can help. */
#include "dfu_download.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/adapter.h"

#define DFUSE_SET_ADDRESS 0x21
#define DFUSE_ERASE 0x41

const char *dfu_usb_error_text(int code)
{
	switch (code) {
	case LIBUSB_ERROR_NO_DEVICE: return "the device left the bus";
	case LIBUSB_ERROR_PIPE: return "the device stalled the request";
	case LIBUSB_ERROR_TIMEOUT: return "no answer in time";
	case LIBUSB_ERROR_IO: return "a USB transfer error";
	case LIBUSB_ERROR_INTERRUPTED: return "cancelled";
	default: return libusb_strerror(code);
	}
}

static int fail(dfu_xfer *x, dfu_failure why, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(dfu_xfer *x, dfu_failure why, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
	va_end(ap);
	x->failure = why;
	return code;
}

/* Turn the outcome of one request (dfu_dnload_wait) into 0 or a reason. */
static int settle(dfu_xfer *x, int r, const dfu_status *st, const char *what)
{
	dfu_status s2;

	if (r == 0)
		return 0;
	if (r == 1 && st->status == DFU_OK)
		return fail(x, DFU_FAIL_DEVICE, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device went to %s, not %s",
		            what, dfu_state_name(st->state), dfu_state_name(DFU_DNLOAD_IDLE));
	if (r == LIBUSB_ERROR_PIPE) {
		/* a stalled request leaves the reason in the status */
		if (dfu_get_status(&x->link, &s2) < 0 || s2.status == DFU_OK)
			return fail(x, DFU_FAIL_STALL, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device stalled it",
			            what);
		st = &s2;
		r = 1;
	}
	if (r == 1) {
		x->dev_status = st->status;
		return fail(x,
		            st->status == DFU_ERR_STALLEDPKT || st->status == DFU_ERR_UNKNOWN ? DFU_FAIL_STALL
		                                                                              : DFU_FAIL_DEVICE,
		            dfu_status_reason(st->status), "%s: the device reports %s (%s), state %s", what,
		            dfu_status_name(st->status), dfu_status_text(st->status), dfu_state_name(st->state));
	}
	if (r == LIBUSB_ERROR_INTERRUPTED)
		return fail(x, DFU_FAIL_CANCELLED, FERRY_ADAPTER_E_CANCELLED, "cancelled at %s", what);
	if (r == LIBUSB_ERROR_TIMEOUT)
		return fail(x, DFU_FAIL_TIMEOUT, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", what, dfu_usb_error_text(r));
	/* no device, a broken transfer, anything else: find it again */
	return fail(x, DFU_FAIL_GONE, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", what, dfu_usb_error_text(r));
}

static void advance(dfu_xfer *x, size_t n)
{
	x->done += n;
	if (x->progress)
		x->progress(x->ctx, x->done, x->total);
}

static bool cancelled(const dfu_xfer *x)
{
	return x->poll.cancelled && x->poll.cancelled(x->poll.ctx);
}

int dfu_download_plain(dfu_xfer *x, const uint8_t *data, size_t len)
{
	char what[64];
	dfu_status st;
	size_t off = 0;
	uint32_t block = 0;

	while (off < len) {
		size_t n = len - off < x->transfer_size ? len - off : x->transfer_size;
		if (cancelled(x))
			return fail(x, DFU_FAIL_CANCELLED, FERRY_ADAPTER_E_CANCELLED, "cancelled at byte %zu", off);
		snprintf(what, sizeof(what), "block %u (byte %zu)", block, off);
		int r = dfu_dnload_wait(&x->link, &x->poll, (uint16_t)block, data + off, (uint16_t)n, &st);
		if ((r = settle(x, r, &st, what)))
			return r;
		off += n;
		block++;
		advance(x, n);
	}
	return 0;
}

/* After the end of the download or a leave request, the device may reset
 * before it answers: that is judged later, by what comes back. */
static bool vanished(int r)
{
	return r == LIBUSB_ERROR_NO_DEVICE || r == LIBUSB_ERROR_IO || r == LIBUSB_ERROR_PIPE ||
	       r == LIBUSB_ERROR_TIMEOUT || r == LIBUSB_ERROR_OTHER;
}

int dfu_manifest_plain(dfu_xfer *x, uint16_t block, bool *went_away)
{
	dfu_status st;
	int r = dfu_dnload(&x->link, block, NULL, 0);

	*went_away = false;
	if (r == LIBUSB_ERROR_PIPE)
		return settle(x, r, &st, "the end of the download"); /* refused: the status says why */
	if (r == 0)
		r = dfu_wait(&x->link, &x->poll, true, &st);
	if (r == LIBUSB_ERROR_INTERRUPTED)
		return fail(x, DFU_FAIL_CANCELLED, FERRY_ADAPTER_E_CANCELLED, "cancelled during manifestation");
	if (r < 0 && vanished(r)) {
		/* gone, or silent as DFU 1.1 lets a device be while it manifests */
		*went_away = true;
		snprintf(x->detail, sizeof(x->detail), "the device stopped answering during manifestation (%s)",
		         dfu_usb_error_text(r));
		return 0;
	}
	if (r < 0)
		return settle(x, r, &st, "manifestation");
	if (st.status != DFU_OK) {
		x->dev_status = st.status;
		return fail(x, DFU_FAIL_DEVICE, dfu_status_reason(st.status),
		            "manifestation: the device reports %s (%s), state %s", dfu_status_name(st.status),
		            dfu_status_text(st.status), dfu_state_name(st.state));
	}
	return 0;
}

static int command(dfu_xfer *x, const dfu_poll *p, uint8_t cmd, uint32_t addr, const char *what)
{
	uint8_t b[5] = {cmd, (uint8_t)addr, (uint8_t)(addr >> 8), (uint8_t)(addr >> 16), (uint8_t)(addr >> 24)};
	dfu_status st;
	int r = dfu_dnload_wait(&x->link, p, 0, b, sizeof(b), &st);
	return settle(x, r, &st, what);
}

static bool seen(const uint32_t *pages, size_t n, uint32_t page)
{
	for (size_t i = 0; i < n; i++)
		if (pages[i] == page)
			return true;
	return false;
}

/* Erase every erasable page the target's elements touch, each once. */
static int erase_pages(dfu_xfer *x, const dfu_layout *layout, const dfuse_target *t)
{
	uint32_t *done = NULL;
	size_t n = 0, cap = 0;
	char what[64];
	int rc = 0;

	for (size_t i = 0; i < t->n_elements && !rc; i++) {
		const dfuse_element *e = &t->elements[i];
		uint64_t a = e->address, end = (uint64_t)e->address + e->size;
		while (a < end && !rc) {
			uint32_t ps, size;
			uint8_t type;
			if (!dfu_layout_page(layout, (uint32_t)a, &ps, &size, &type)) {
				rc = fail(x, DFU_FAIL_DEVICE, FERRY_ADAPTER_E_INSTALL_FAILED,
				          "address 0x%08llx is outside the device's memory", (unsigned long long)a);
				break;
			}
			if ((type & DFU_MEM_ERASABLE) && !seen(done, n, ps)) {
				if (cancelled(x)) {
					rc = fail(x, DFU_FAIL_CANCELLED, FERRY_ADAPTER_E_CANCELLED,
					          "cancelled while erasing");
					break;
				}
				if (n == cap) {
					uint32_t *m = realloc(done, (cap = cap ? cap * 2 : 16) * sizeof(*done));
					if (!m) {
						rc = fail(x, DFU_FAIL_DEVICE, FERRY_ADAPTER_E_ADAPTER_ERROR,
						          "out of memory");
						break;
					}
					done = m;
				}
				done[n++] = ps;
				snprintf(what, sizeof(what), "erase of the page at 0x%08x", ps);
				rc = command(x, &x->erase_poll, DFUSE_ERASE, ps, what);
			}
			a = (uint64_t)ps + size;
		}
	}
	free(done);
	return rc;
}

/* Each block goes to an address set just before it, as block 2: the
 * device computes a block's address from its own wTransferSize, which may
 * be larger than the blocks we send. */
static int write_element(dfu_xfer *x, const uint8_t *file, const dfuse_element *e)
{
	char what[80];
	dfu_status st;

	for (uint32_t off = 0; off < e->size;) {
		uint32_t n = e->size - off < x->transfer_size ? e->size - off : x->transfer_size;
		int r;
		if (cancelled(x))
			return fail(x, DFU_FAIL_CANCELLED, FERRY_ADAPTER_E_CANCELLED, "cancelled at 0x%08x",
			            e->address + off);
		snprintf(what, sizeof(what), "setting the address pointer to 0x%08x", e->address + off);
		if ((r = command(x, &x->poll, DFUSE_SET_ADDRESS, e->address + off, what)))
			return r;
		snprintf(what, sizeof(what), "the block at 0x%08x", e->address + off);
		r = dfu_dnload_wait(&x->link, &x->poll, 2, file + e->offset + off, (uint16_t)n, &st);
		if ((r = settle(x, r, &st, what)))
			return r;
		off += n;
		advance(x, n);
	}
	return 0;
}

int dfuse_download_target(dfu_xfer *x, const dfu_layout *layout, const uint8_t *file, const dfuse_target *t)
{
	int rc = erase_pages(x, layout, t);

	for (size_t i = 0; i < t->n_elements && !rc; i++)
		rc = write_element(x, file, &t->elements[i]);
	return rc;
}

int dfuse_leave(dfu_xfer *x, uint32_t addr, bool *went_away)
{
	dfu_status st;
	char what[64];
	int r;

	*went_away = false;
	snprintf(what, sizeof(what), "setting the start address 0x%08x", addr);
	if ((r = command(x, &x->poll, DFUSE_SET_ADDRESS, addr, what)))
		return r;
	/* a zero-length download in dfuDNLOAD-IDLE: the next GETSTATUS makes
	 * the device manifest, which for DfuSe means jump to the firmware */
	r = dfu_dnload(&x->link, 2, NULL, 0);
	if (r == 0)
		r = dfu_get_status(&x->link, &st);
	if (r < 0 && vanished(r)) {
		*went_away = true;
		snprintf(x->detail, sizeof(x->detail), "the device left without answering the leave request (%s)",
		         dfu_usb_error_text(r));
		return 0;
	}
	if (r < 0)
		return settle(x, r, &st, "leave");
	if (st.status != DFU_OK) {
		x->dev_status = st.status;
		return fail(x, DFU_FAIL_DEVICE, dfu_status_reason(st.status), "leave: the device reports %s (%s)",
		            dfu_status_name(st.status), dfu_status_text(st.status));
	}
	return 0;
}
