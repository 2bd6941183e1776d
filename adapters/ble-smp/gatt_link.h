/* The SMP transport over BLE GATT through BlueZ: one device's link, brought
 * up (Connect, ServicesResolved, the SMP characteristic, its write and
 * notify sides acquired) and brought back after a reset or a drop.  It
 * implements smp_transport_ops for the shared SMP client. */
#ifndef FERRY_GATT_LINK_H
#define FERRY_GATT_LINK_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "bluez.h"
#include "ferry/adapter.h"
#include "smp.h"
#include "smp_client.h"

#define ATT_MTU_MIN 23
#define ATT_MTU_MAX 517

typedef struct gatt_link_cfg {
	long connect_timeout_ms; /* one Connect call, and waiting for ServicesResolved */
	long reset_drop_ms;      /* after `os reset`, how long the old link may take to drop */
	bool reassembly;         /* the device puts packets together from MTU - 3 pieces */
} gatt_link_cfg;

typedef struct gatt_link {
	sd_bus *bus;
	const ferry_host_v1 *host;
	gatt_link_cfg cfg;
	char dev_path[BLUEZ_PATH_MAX], chr_path[BLUEZ_PATH_MAX];
	char name[24];         /* the address, for messages */
	char bluez_owner[128]; /* org.bluez's unique name: signals from others are ignored */
	bool we_connected;     /* Connect was ours: Disconnect when done */
	bool up, down;         /* acquired; the link dropped since */
	uint64_t up_serial;    /* BlueZ's message serial when the link came up: older signals are stale */
	int wfd, nfd;          /* AcquireWrite / AcquireNotify fds, -1 when not used */
	bool started;          /* StartNotify in use instead of AcquireNotify */
	sd_bus_slot *dev_watch, *value_watch;
	unsigned mtu;
	smp_reasm rx;
	uint8_t ready[SMP_PACKET_MAX]; /* a packet from a Value signal, not yet taken */
	size_t ready_len;
	bool have_ready;
	bool refused; /* BlueZ refused for the link's security: nothing to retry */
	char refusal[FERRY_ADAPTER_DETAIL_MAX];
	unsigned long writes; /* pieces written, for the log */
} gatt_link;

extern const smp_transport_ops gatt_link_ops;

/* Bring the link up to the device at `path` by deadline_ms.  The device
 * must be Paired and Bonded; BlueZ answering NotPermitted or NotAuthorized
 * while the characteristic is set up means the link is not encrypted or not
 * authenticated enough for the device: refused, with the reason. */
int gatt_link_open(gatt_link *l, sd_bus *bus, const ferry_host_v1 *host, const gatt_link_cfg *cfg,
		   const char *device_path, const char *name, int64_t deadline_ms, char *detail);
/* Release the fds and, if this link connected the device, disconnect it. */
void gatt_link_close(gatt_link *l);

/* Why a device cannot be used, or NULL when it is Paired and Bonded. */
const char *gatt_link_unpaired(const bluez_device *d);

#endif
