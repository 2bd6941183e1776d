/* The simulated MCU that the simulated links share: a Zephyr application with
 * an mcumgr server under MCUboot with two slots.  It takes whole SMP request
 * packets and hands whole answers to its link; the link (a pty in
 * smp_device.c, BLE GATT through a simulated BlueZ in bluez_sim.c) does the
 * framing and decides what a reset does to the connection.
 *
 * It follows the SMP spec (see adapters/smp/smp.h): image state read and
 * test/confirm, upload into the secondary slot with `off` continuation and
 * resume by `sha`, os echo, params and reset.  As Zephyr does, `os reset` is
 * answered first and carried out CONFIG_MCUMGR_GRP_OS_RESET_MS (250 ms)
 * later; until then the old firmware answers everything as before.  At boot
 * MCUboot's rules apply: a pending image is swapped in for a test boot, and a
 * test image that was not confirmed is reverted at the next reset. */
#ifndef FERRY_SIM_MCU_H
#define FERRY_SIM_MCU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCU_SLOT_MAX (1024 * 1024)

typedef struct mcu_slot {
	uint8_t *data;
	size_t len;
	char version[32];
	uint8_t hash[32];
	bool valid, pending, permanent;
	bool intact; /* header + payload hash to the SHA256 TLV, as MCUboot checks at boot */
} mcu_slot;

typedef struct mcu_io {
	void *ctx;
	/* Carry one answer packet to the host. */
	void (*send)(void *ctx, const uint8_t *pkt, size_t len);
	/* The device resets: the link does what a reset does to it, and calls
	 * mcu_boot when the device is up again. */
	void (*reset)(void *ctx);
} mcu_io;

typedef struct mcu {
	mcu_io io;
	mcu_slot s[2];  /* 0 primary (running), 1 secondary */
	bool test_boot; /* running image is on trial */
	/* upload in progress */
	size_t up_len, up_off;
	uint8_t up_sha[32];
	bool up_active;
	/* the reassembly buffer `os params` reports; a request that does not fit
	 * in it with the link's framing (frame_overhead bytes) is dropped */
	size_t buf_size, frame_overhead;
	/* how many such buffers `os params` reports (buf_count) */
	unsigned buf_count;
	/* flash timing of the upload: a page is erased when a write first
	 * touches it, then each 32-bit word is written; 0 for none */
	long flash_erase_ms, flash_write_us;
	size_t flash_page, erased_pages;
	/* `os reset` answered: the reset happens at reset_due (monotonic ms), 0 when none */
	long reset_delay_ms;
	int64_t reset_due;
	/* faults */
	long reset_at, drop_every, stall_ms, lose_resets;
	bool refuse_confirm, boot_fails, reset_done, stall_done;
	/* --vanish-on-confirm: the confirm takes effect, then nothing is answered */
	bool vanish_on_confirm, vanished;
	/* counters */
	unsigned long requests, uploads, up_starts, up_resumes, up_bytes, resets, too_big, damaged_boots;
} mcu;

/* A device running a generated image of `version`. */
void mcu_init(mcu *m, const char *version, const mcu_io *io);
/* Take one request packet; answers go out through io.send. */
void mcu_handle(mcu *m, const uint8_t *pkt, size_t len);
/* MCUboot at boot, after a reset. */
void mcu_boot(mcu *m);
/* Milliseconds until the device has something to do by itself (a reset it
 * answered), -1 when nothing; mcu_tick does what is due.  The links call
 * both from their event loops. */
long mcu_due_ms(const mcu *m);
void mcu_tick(mcu *m);

/* The MCU's faults, shared by the simulators' command lines:
 *   --reset-at N       reset once when an upload passes offset N (upload lost
 *                      unless resumed by sha)
 *   --drop-every K     leave every K-th request unanswered
 *   --stall-ms MS      once, answer the 3rd upload request MS late
 *   --refuse-confirm   answer confirm with rc 11 (EACCESSDENIED)
 *   --boot-fails       a new image never boots: MCUboot reverts at once
 *   --reset-delay-ms MS  how long after answering `os reset` the device
 *                      resets (250, Zephyr's CONFIG_MCUMGR_GRP_OS_RESET_MS;
 *                      0: at once)
 *   --lose-reset N     the first N `os reset` requests are lost on the way:
 *                      neither answered nor carried out
 *   --buf-count N      the number of such buffers `os params` reports (4,
 *                      Zephyr's CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT)
 *   --flash-erase-ms MS  time to erase one 4 KiB flash page, done when an
 *                      upload first writes into it (85: the nRF52840's
 *                      tERASEPAGE, its datasheet's maximum; 0: none)
 *   --flash-write-us US  time to write one 32-bit word (41: the nRF52840's
 *                      tWRITE maximum; 0: none)
 *   --buf-size N       the buffer `os params` reports (384, Zephyr's
 *                      default); longer requests are dropped
 *   --vanish-on-confirm  the confirm makes the image permanent, but neither
 *                      it nor any later request is answered
 * 1 when argv[*i] was one of them (*i then points at its last word), 0 when
 * it is not. */
int mcu_option(mcu *m, int argc, char **argv, int *i);

/* An MCUboot image (header, payload, SHA256 TLV) of `version`; out holds
 * payload + 72 bytes.  Returns its length. */
size_t mcu_make_image(const char *version, size_t payload, uint8_t *out);
/* --make-image VERSION SIZE OUT, for tests: 0 or 1. */
int mcu_make_image_file(const char *version, const char *size, const char *out);

#endif
