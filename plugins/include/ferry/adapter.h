/* ferry adapter ABI, version 1: the whole binary interface between ferryd and
 * an adapter plugin.
 *
 * A plugin is a shared object exporting two symbols:
 *
 *   int ferry_adapter_abi(const int *offered, size_t n_offered);
 *       ferryd lists the ABI versions it can load; the plugin answers with
 *       the one it implements, as a literal number written in its source
 *       (never a macro from this header, so that rebuilding a plugin against
 *       a newer header cannot silently change what it claims), or -1.
 *
 *   const struct ferry_adapter_v1 *ferry_adapter_table_v1(void);
 *       the operation table for ABI version 1.
 *
 * ferryd refuses a plugin that lacks either symbol, answers a version it did
 * not offer, or returns a table whose `abi` field differs; it logs why and
 * goes on without it.
 *
 * Every operation may block: ferryd runs each install in a worker thread.
 * A plugin never touches MQTT, the journal or the network; it gets logging,
 * progress, a cancel flag, its config section and a clock from the host.
 * Operations return 0 on success or a ferry reason code (see
 * docs/protocol.md; ADAPTER_ERROR, INSTALL_FAILED, VERSION_MISMATCH,
 * NO_MATCHING_DEVICE, DEVICE_BUSY, CANCELLED, UNSUPPORTED) and fill `detail`
 * with a sentence naming what went wrong.
 *
 * Compatibility promise: within ABI 1, structs only grow at the end, and
 * every struct passed to a plugin starts with its size.
 */
#ifndef FERRY_ADAPTER_H
#define FERRY_ADAPTER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reason codes an adapter may return (values of ferryd's ferry_err). */
enum {
	FERRY_ADAPTER_OK = 0,
	FERRY_ADAPTER_E_UNSUPPORTED = 9,
	FERRY_ADAPTER_E_NO_MATCHING_DEVICE = 14,
	FERRY_ADAPTER_E_DEVICE_BUSY = 15,
	FERRY_ADAPTER_E_ADAPTER_ERROR = 20,
	FERRY_ADAPTER_E_INSTALL_FAILED = 21,
	FERRY_ADAPTER_E_VERSION_MISMATCH = 22,
	FERRY_ADAPTER_E_CANCELLED = 23,
};

#define FERRY_ADAPTER_DETAIL_MAX 256
#define FERRY_ADAPTER_STR_MAX 65 /* 64 characters and a NUL */
#define FERRY_ADAPTER_COMPONENTS_MAX 8
#define FERRY_ADAPTER_ATTRS_MAX 8

/* Write a sentence into an operation's `detail` and return `code`, so that
 * an operation can end with `return ferry_adapter_fail(detail, code, ...)`. */
static inline int ferry_adapter_fail(char *detail, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline int ferry_adapter_fail(char *detail, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, FERRY_ADAPTER_DETAIL_MAX, fmt, ap);
	va_end(ap);
	return code;
}

/* Capabilities, declared in the table. */
enum {
	FERRY_ADAPTER_CAP_ROLLBACK = 1u << 0,    /* the device returns to the old image on a failed boot */
	FERRY_ADAPTER_CAP_NEEDS_RESET = 1u << 1, /* activate resets the device */
	FERRY_ADAPTER_CAP_RESUME = 1u << 2,      /* write can continue an interrupted push */
};

enum ferry_log_level { FERRY_LOG_ERROR = 3, FERRY_LOG_WARNING = 4, FERRY_LOG_INFO = 6, FERRY_LOG_DEBUG = 7 };

/* What ferryd offers a plugin.  `ctx` is passed back unchanged. */
typedef struct ferry_host_v1 {
	size_t size;
	void *ctx;
	void (*log)(void *ctx, int level, const char *msg);
	/* The adapter's config section as flat keys ("port", "baud", ...);
	 * NULL when the key is absent. */
	const char *(*config)(void *ctx, const char *key);
	/* Monotonic milliseconds. */
	int64_t (*now_ms)(void *ctx);
} ferry_host_v1;

typedef struct ferry_kv_v1 {
	char key[FERRY_ADAPTER_STR_MAX];
	char value[FERRY_ADAPTER_STR_MAX];
} ferry_kv_v1;

/* One subdevice as an adapter sees it. */
typedef struct ferry_device_v1 {
	size_t size;
	char id[FERRY_ADAPTER_STR_MAX];        /* stable, unique within the adapter */
	char vendor_id[FERRY_ADAPTER_STR_MAX]; /* compared with the manifest's target */
	char class_id[FERRY_ADAPTER_STR_MAX];
	char serial[FERRY_ADAPTER_STR_MAX];
	ferry_kv_v1 match[FERRY_ADAPTER_ATTRS_MAX]; /* link-level identity, e.g. usb=0483:df11 */
	size_t n_match;
	ferry_kv_v1 components[FERRY_ADAPTER_COMPONENTS_MAX]; /* component name -> running version */
	size_t n_components;
	ferry_kv_v1 attributes[FERRY_ADAPTER_ATTRS_MAX];
	size_t n_attributes;
} ferry_device_v1;

/* The image to push: verified by ferryd before any call that receives it. */
typedef struct ferry_image_v1 {
	size_t size;
	const char *component; /* manifest component name */
	const char *path;      /* a file in ferryd's store, read-only */
	uint64_t length;
	uint8_t sha256[32];
	const char *format;  /* "mcuboot", "dfu", "file", ... */
	const char *version; /* semantic version from the manifest */
} ferry_image_v1;

/* Per-session callbacks: progress and the cancel flag. */
typedef struct ferry_session_host_v1 {
	size_t size;
	void *ctx;
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	bool (*cancelled)(void *ctx);
} ferry_session_host_v1;

typedef struct ferry_adapter_v1 {
	int abi;                    /* 1 */
	const char *name;           /* "serial-smp": the manifest's `adapter` */
	const char *const *formats; /* NULL-terminated list of image formats it takes */
	uint32_t caps;              /* FERRY_ADAPTER_CAP_* */

	int (*init)(const ferry_host_v1 *host, void **state, char *detail);
	void (*fini)(void *state);
	/* Fill up to `max` devices; *n is how many. */
	int (*discover)(void *state, ferry_device_v1 *devs, size_t max, size_t *n, char *detail);

	int (*open)(void *state, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **session,
		    char *detail);
	/* Space, format and identity of img against the open device. */
	int (*check)(void *session, const ferry_image_v1 *img, char *detail);
	/* Push the image.  *resume_from is where a previous push stopped (0 to
	 * start over) and is updated as bytes are acknowledged, so ferryd can
	 * journal it. */
	int (*write)(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail);
	/* Make the device apply it: reset, swap, manifest. */
	int (*activate)(void *session, const ferry_image_v1 *img, char *detail);
	/* Read back the running version into `version` (FERRY_ADAPTER_STR_MAX). */
	int (*confirm)(void *session, const ferry_image_v1 *img, char *version, char *detail);
	/* Undo what can be undone: drop a pending image, revert.  0 only when
	 * the device was reached and is back as it was; nonzero after
	 * activation makes ferryd report `failed` with the device's image
	 * unknown rather than `rolled_back`. */
	int (*abort)(void *session, char *detail);
	void (*close)(void *session);
} ferry_adapter_v1;

#ifdef __cplusplus
}
#endif

#endif
