/* DFU interfaces in USB descriptors (DFU 1.1, section 4). */
#include "dfu_usb.h"

#include <stdio.h>
#include <string.h>

#define DFU_CLASS 0xFE
#define DFU_SUBCLASS 0x01
#define DFU_PROTO_RUNTIME 0x01
#define DFU_PROTO_DFU 0x02
#define DFU_FUNC_TYPE 0x21

bool dfu_usb_parse_func(const uint8_t *p, int len, dfu_func *out)
{
	for (int o = 0; o + 2 <= len;) {
		int bl = p[o];
		if (bl < 2 || o + bl > len)
			return false; /* a broken descriptor run: trust nothing after it */
		if (p[o + 1] == DFU_FUNC_TYPE && bl >= 7) {
			out->attrs = p[o + 2];
			out->detach_ms = (uint16_t)(p[o + 3] | p[o + 4] << 8);
			out->transfer_size = (uint16_t)(p[o + 5] | p[o + 6] << 8);
			out->bcd_dfu = bl >= 9 ? (uint16_t)(p[o + 7] | p[o + 8] << 8) : 0x0100;
			return true;
		}
		o += bl;
	}
	return false;
}

static void port_path(libusb_device *dev, char *out, size_t cap)
{
	uint8_t ports[8];
	int n = libusb_get_port_numbers(dev, ports, sizeof(ports));
	size_t o = (size_t)snprintf(out, cap, "%u", libusb_get_bus_number(dev));

	for (int i = 0; i < n && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%u", i ? "." : "-", ports[i]);
}

int dfu_usb_describe(libusb_device *dev, dfu_usb *u)
{
	struct libusb_device_descriptor dd;
	struct libusb_config_descriptor *cfg = NULL;
	bool found = false, have_func = false;
	int r;

	memset(u, 0, sizeof(*u));
	if ((r = libusb_get_device_descriptor(dev, &dd)) < 0)
		return r;
	if ((r = libusb_get_active_config_descriptor(dev, &cfg)) < 0 &&
	    (r = libusb_get_config_descriptor(dev, 0, &cfg)) < 0)
		return r == LIBUSB_ERROR_NOT_FOUND ? 1 : r;
	for (int i = 0; i < cfg->bNumInterfaces && !found; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];
		for (int a = 0; a < itf->num_altsetting; a++) {
			const struct libusb_interface_descriptor *d = &itf->altsetting[a];
			if (d->bInterfaceClass != DFU_CLASS || d->bInterfaceSubClass != DFU_SUBCLASS ||
			    (d->bInterfaceProtocol != DFU_PROTO_RUNTIME && d->bInterfaceProtocol != DFU_PROTO_DFU))
				continue;
			found = true;
			u->intf = d->bInterfaceNumber;
			u->dfu_mode = d->bInterfaceProtocol == DFU_PROTO_DFU;
			if (!have_func)
				have_func = dfu_usb_parse_func(d->extra, d->extra_length, &u->func);
			if (u->n_alts < DFU_ALTS_MAX)
				u->alts[u->n_alts++] = (dfu_alt){.alt = d->bAlternateSetting, .istring = d->iInterface};
		}
	}
	/* some devices put the functional descriptor after the interfaces */
	if (found && !have_func)
		have_func = dfu_usb_parse_func(cfg->extra, cfg->extra_length, &u->func);
	libusb_free_config_descriptor(cfg);
	if (!found)
		return 1;
	if (!have_func)
		u->func = (dfu_func){.attrs = 0x01, .detach_ms = 1000, .transfer_size = 0, .bcd_dfu = 0x0100};
	u->dev = libusb_ref_device(dev);
	u->vid = dd.idVendor;
	u->pid = dd.idProduct;
	u->bcd_device = dd.bcdDevice;
	u->iserial = dd.iSerialNumber;
	port_path(dev, u->port, sizeof(u->port));
	return 0;
}

/* A string descriptor as printable ASCII: anything else becomes '?', so a
 * hostile device cannot put control characters in our logs or reports. */
static void read_string(libusb_device_handle *h, uint8_t index, char *out, size_t cap)
{
	unsigned char buf[256];
	int n;

	out[0] = '\0';
	if (!index || (n = libusb_get_string_descriptor_ascii(h, index, buf, sizeof(buf))) <= 0)
		return;
	if ((size_t)n >= cap)
		n = (int)cap - 1;
	for (int i = 0; i < n; i++)
		out[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? (char)buf[i] : '?';
	out[n] = '\0';
}

void dfu_usb_read_strings(libusb_device_handle *h, dfu_usb *u)
{
	read_string(h, u->iserial, u->serial, sizeof(u->serial));
	for (size_t i = 0; i < u->n_alts; i++)
		read_string(h, u->alts[i].istring, u->alts[i].name, sizeof(u->alts[i].name));
}

void dfu_usb_release(dfu_usb *u)
{
	if (u->dev)
		libusb_unref_device(u->dev);
	u->dev = NULL;
}
