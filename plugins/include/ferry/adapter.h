/* ferry adapter ABI, versions 1 and 2: the whole binary interface between
 * ferryd and an adapter plugin.  New plugins implement version 2; ferryd
 * still loads version 1 plugins (see "Version 1" at the end).
 *
 * A plugin is a shared object exporting two symbols (declare them with
 * FERRY_ADAPTER_EXPORT so that a plugin built with -fvisibility=hidden
 * exports them and nothing else):
 *
 *   int ferry_adapter_abi(const int *offered, size_t n_offered);
 *       ferryd lists the ABI versions it can load (today {1, 2}); the
 *       plugin answers with the one it implements, as a literal number
 *       written in its source (never a macro from this header, so that
 *       rebuilding a plugin against a newer header cannot silently change
 *       what it claims), or -1.
 *
 *   const struct ferry_adapter_v2 *ferry_adapter_table_v2(void);
 *       the operation table for ABI version 2 (ferry_adapter_table_v1 for
 *       version 1).
 *
 * ferryd refuses a plugin that lacks either symbol, answers a version it did
 * not offer, or returns a table whose `abi` field differs or that lacks an
 * operation; it logs why and goes on without it.
 *
 * Operations return 0 on success or one of the FERRY_ADAPTER_E_* reason
 * codes below, and fill `detail` with a sentence naming what went wrong.
 * Any other number is taken as adapter_error, and the number is reported.
 * A plugin never touches MQTT, the journal or the network; it gets logging,
 * progress, a cancel flag, its config section and a clock from the host.
 *
 * Threads.  Every operation may block.
 *   - init and fini run alone: no other operation of the plugin runs
 *     meanwhile.
 *   - discover never runs twice at once, but it may run while sessions are
 *     open, on another thread.  It must leave a device that is in a session
 *     alone (report what it read last, or nothing) and must not disturb the
 *     session's link.
 *   - Sessions on different devices may run at the same time, each on its
 *     own thread, up to the table's max_sessions.  ferryd never opens two
 *     sessions on one device at once.  Every operation of one session, from
 *     open to close, is called from the same thread, one at a time.
 *   - The host's callbacks (log, config, now_ms, progress, cancelled) may be
 *     called from any thread.
 *
 * How long pointers stay valid.
 *   - `host` given to init, and every string its config() returns: until
 *     fini returns.
 *   - `dev` given to open: during that call only; copy what you keep.
 *   - `sh` given to open: until close returns.
 *   - `img` and the strings in it, `detail`, `version`, `devs`: during the
 *     call they are passed to only.
 *   - `detail` holds FERRY_ADAPTER_DETAIL_MAX bytes; ferryd terminates and
 *     cleans whatever the plugin leaves in it.
 *
 * Compatibility promise: within one ABI version, structs only grow at the
 * end, and every struct passed to a plugin starts with its size.
 */
#ifndef FERRY_ADAPTER_H
#define FERRY_ADAPTER_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FERRY_ADAPTER_EXPORT __attribute__((visibility("default")))
#else
#define FERRY_ADAPTER_EXPORT
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
/* The most sessions a table may declare; ferryd's own limit is its config's
 * install.parallel. */
#define FERRY_ADAPTER_SESSIONS_MAX 64

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
	/* ABI 2: activate runs the new image on trial; after it, abort brings
	 * the old image back and commit makes the new one permanent.  Such a
	 * device can take part in an all-or-nothing update as a revertible one.
	 * ABI 1: the device returns to the old image on a failed boot. */
	FERRY_ADAPTER_CAP_ROLLBACK = 1u << 0,
	FERRY_ADAPTER_CAP_NEEDS_RESET = 1u << 1, /* activate resets the device */
	FERRY_ADAPTER_CAP_RESUME = 1u << 2,      /* write can continue an interrupted push */
	/* activate restarts the gateway itself (ferryd with it): confirm is
	 * asked again after the restart, and must tell whether the new image
	 * booted.  Such a device never takes part in an all-or-nothing update
	 * as a revertible one (it goes last), and is never pushed to again
	 * after its activation: a confirm that fails is the new image failing. */
	FERRY_ADAPTER_CAP_RESTARTS_GATEWAY = 1u << 3,
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

/* Config numbers.  `key` is read from the adapter's section: absent, *out is
 * `def`; present, it must be a whole decimal number in [min, max].  An empty
 * value, one with anything after the digits, or one out of range is a
 * config error: FERRY_ADAPTER_E_ADAPTER_ERROR with `detail` naming the key,
 * what it holds and what it must be.  Never 0 for a value that is not one. */
static inline int ferry_adapter_config_long(const ferry_host_v1 *host, const char *key, long def, long min,
					    long max, long *out, char *detail)
{
	const char *v = host->config(host->ctx, key);
	char *end = NULL;
	long x;

	if (!v) {
		*out = def;
		return 0;
	}
	errno = 0;
	x = strtol(v, &end, 10);
	if (!*v || end == v || *end || errno)
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "config %s: \"%.40s\" is not a whole number",
					  key, v);
	if (x < min || x > max)
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "config %s: %ld is not in %ld..%ld", key,
					  x, min, max);
	*out = x;
	return 0;
}

/* The same for an int. */
static inline int ferry_adapter_config_int(const ferry_host_v1 *host, const char *key, int def, int min, int max,
					   int *out, char *detail)
{
	long x = 0;
	int rc = ferry_adapter_config_long(host, key, def, min, max, &x, detail);
	if (rc == 0)
		*out = (int)x;
	return rc;
}

typedef struct ferry_kv_v1 {
	char key[FERRY_ADAPTER_STR_MAX];
	char value[FERRY_ADAPTER_STR_MAX];
} ferry_kv_v1;

/* One subdevice as an adapter sees it. */
typedef struct ferry_device_v1 {
	size_t size;
	char id[FERRY_ADAPTER_STR_MAX];        /* stable, unique within the adapter: the inventory's device id */
	char vendor_id[FERRY_ADAPTER_STR_MAX]; /* compared with the manifest's target */
	char class_id[FERRY_ADAPTER_STR_MAX];
	char serial[FERRY_ADAPTER_STR_MAX];
	/* link-level identity, e.g. port=ttyUSB0, usb=0483:df11: what a
	 * manifest's target.match names to pick this device */
	ferry_kv_v1 match[FERRY_ADAPTER_ATTRS_MAX];
	size_t n_match;
	/* the components it serves, name -> running version; the version is
	 * "" when the device serves the component but cannot tell its version
	 * now.  A manifest component goes only to devices that list its name. */
	ferry_kv_v1 components[FERRY_ADAPTER_COMPONENTS_MAX];
	size_t n_components;
	/* anything the adapter wants the inventory to show; one key is ferry's:
	 * FERRY_ADAPTER_ATTR_LINK, what the local link to the device gives */
	ferry_kv_v1 attributes[FERRY_ADAPTER_ATTRS_MAX];
	size_t n_attributes;
} ferry_device_v1;

/* Declared link security (docs/adapters.md): every adapter should set the
 * attribute "link" of each device to one of these.  ferryd compares it with
 * the minimum a manifest or its config asks of a component and refuses a
 * push over a weaker link (link_insecure).  A device that declares nothing,
 * or a value not listed here, counts as unauthenticated. */
#define FERRY_ADAPTER_ATTR_LINK "link"
#define FERRY_LINK_PHYSICAL "physical"                 /* a wire: USB, UART, the gateway's own files */
#define FERRY_LINK_BONDED_ENCRYPTED "bonded-encrypted" /* e.g. a BLE link encrypted with a stored bond */
#define FERRY_LINK_UNAUTHENTICATED "unauthenticated"   /* anyone in range could be on it */

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

/* One key an adapter's config section may hold.  ferryd checks every section
 * against its adapter's list when it reads its config (and on --check), as
 * it checks its own keys: a key not listed, a value of the wrong type or
 * out of range, a required key missing -- each stops ferryd with the file,
 * the line and the key.  An adapter reads its values with host->config as
 * before; the check only means it never sees a misspelt key silently
 * ignored. */
typedef struct ferry_config_key {
	/* dotted, as host->config names it, with "[]" for any list index:
	 * "timeout_ms", "ports[].path", "files[].reload" */
	const char *key;
	int type;      /* FERRY_CFG_TEXT, FERRY_CFG_INT, FERRY_CFG_BOOL */
	long min, max; /* INT: the range; TEXT: the length in bytes */
	bool required; /* must be there; under "[]", in every item of the list */
} ferry_config_key;

enum { FERRY_CFG_TEXT = 1, FERRY_CFG_INT = 2, FERRY_CFG_BOOL = 3 };

/* ABI 2.  An install goes open, check, write, activate, confirm, commit,
 * close; after a failure or a cancel, abort.  A session may be opened only
 * to commit or abort: after a restart of ferryd, or when an all-or-nothing
 * update commits or reverts devices that were activated earlier, each in a
 * session of its own.  So commit and abort must work in a fresh session,
 * from what the device tells and the image they are given. */
typedef struct ferry_adapter_v2 {
	int abi;                    /* 2 */
	const char *name;           /* "serial-smp": the manifest's `adapter` */
	const char *const *formats; /* NULL-terminated list of image formats it takes */
	uint32_t caps;              /* FERRY_ADAPTER_CAP_* */
	/* Sessions it can run at once, on different devices (1 to
	 * FERRY_ADAPTER_SESSIONS_MAX; 0 counts as 1). */
	unsigned max_sessions;
	/* The keys its config section may hold, ended by one whose key is
	 * NULL; NULL when it takes no config at all (a section is refused). */
	const ferry_config_key *config_keys;

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
	/* Run the new image: on trial when the adapter has CAP_ROLLBACK (an
	 * MCUboot test boot; the old image kept), for good otherwise. */
	int (*activate)(void *session, const ferry_image_v1 *img, char *detail);
	/* Read back the version the device runs now into `version`
	 * (FERRY_ADAPTER_STR_MAX).  Nothing is made permanent here; ferryd
	 * compares the version with the manifest's. */
	int (*confirm)(void *session, const ferry_image_v1 *img, char *version, char *detail);
	/* Make the image that runs on trial permanent (an MCUboot confirm; drop
	 * the kept old image).  0 when it is permanent, also when it was
	 * already; without CAP_ROLLBACK, return 0. */
	int (*commit)(void *session, const ferry_image_v1 *img, char *detail);
	/* Undo what can be undone: drop a pending image, revert one that runs
	 * on trial.  0 only when the device was reached and runs its old image
	 * (or was never touched).  A nonzero return after activate makes ferryd
	 * report `failed` with the device's image unknown, not `rolled_back`. */
	int (*abort)(void *session, const ferry_image_v1 *img, char *detail);
	void (*close)(void *session);
} ferry_adapter_v2;

FERRY_ADAPTER_EXPORT int ferry_adapter_abi(const int *offered, size_t n_offered);
FERRY_ADAPTER_EXPORT const ferry_adapter_v2 *ferry_adapter_table_v2(void);

/* Version 1, still loaded.  Its confirm made the image permanent, and it
 * has no commit, so ferryd counts a version 1 adapter as one that cannot
 * revert in an all-or-nothing update, and runs one session of it at a time.
 * Its abort takes no image.  Otherwise the operations mean what they mean
 * in version 2. */
typedef struct ferry_adapter_v1 {
	int abi; /* 1 */
	const char *name;
	const char *const *formats;
	uint32_t caps;

	int (*init)(const ferry_host_v1 *host, void **state, char *detail);
	void (*fini)(void *state);
	int (*discover)(void *state, ferry_device_v1 *devs, size_t max, size_t *n, char *detail);
	int (*open)(void *state, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **session,
		    char *detail);
	int (*check)(void *session, const ferry_image_v1 *img, char *detail);
	int (*write)(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail);
	int (*activate)(void *session, const ferry_image_v1 *img, char *detail);
	/* Read back the running version and make it permanent. */
	int (*confirm)(void *session, const ferry_image_v1 *img, char *version, char *detail);
	int (*abort)(void *session, char *detail);
	void (*close)(void *session);
} ferry_adapter_v1;

FERRY_ADAPTER_EXPORT const ferry_adapter_v1 *ferry_adapter_table_v1(void);

#ifdef __cplusplus
}
#endif

#endif
