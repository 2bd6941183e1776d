/* DFU suffix and DfuSe container parsing.  Every length in the file is
 * checked against the bytes actually there before it is used. */
#include "dfu_file.h"

#include <stdio.h>
#include <string.h>

uint32_t dfu_crc32(const uint8_t *p, size_t n, uint32_t crc)
{
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
	}
	return crc;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int parse_suffix(const uint8_t *buf, size_t len, dfu_suffix *s, char *detail)
{
	const uint8_t *p;

	if (len < DFU_SUFFIX_LEN) {
		snprintf(detail, DFU_DETAIL_MAX, "%zu bytes: too short for a DFU suffix", len);
		return -1;
	}
	p = buf + len - DFU_SUFFIX_LEN;
	if (p[8] != 'U' || p[9] != 'F' || p[10] != 'D' || p[11] != DFU_SUFFIX_LEN) {
		snprintf(detail, DFU_DETAIL_MAX, "no DFU suffix (signature UFD and length 16 missing)");
		return -1;
	}
	s->bcd_device = le16(p);
	s->id_product = le16(p + 2);
	s->id_vendor = le16(p + 4);
	s->bcd_dfu = le16(p + 6);
	s->crc = le32(p + 12);
	uint32_t crc = dfu_crc32(buf, len - 4, 0xFFFFFFFFu);
	if (crc != s->crc) {
		snprintf(detail, DFU_DETAIL_MAX, "DFU suffix CRC is 0x%08x, the file's is 0x%08x", s->crc, crc);
		return -1;
	}
	if (s->bcd_dfu != 0x0100 && s->bcd_dfu != 0x011A) {
		snprintf(detail, DFU_DETAIL_MAX, "bcdDFU 0x%04x is neither 1.0 nor DfuSe 1.1a", s->bcd_dfu);
		return -1;
	}
	return 0;
}

static int parse_target(const uint8_t *buf, size_t end, size_t *off, dfuse_target *t, char *detail)
{
	size_t o = *off;
	if (o + 274 > end || memcmp(buf + o, "Target", 6)) {
		snprintf(detail, DFU_DETAIL_MAX, "DfuSe target at byte %zu: no \"Target\" header", o);
		return -1;
	}
	t->alt = buf[o + 6];
	t->named = le32(buf + o + 7) != 0;
	memcpy(t->name, buf + o + 11, 255);
	t->name[255] = '\0';
	uint32_t tsize = le32(buf + o + 266), n = le32(buf + o + 270);
	o += 274;
	if (tsize > end - o || n > DFUSE_ELEMENTS_MAX) {
		snprintf(detail, DFU_DETAIL_MAX, "DfuSe target %u: size %u or %u elements do not fit", t->alt, tsize, n);
		return -1;
	}
	size_t tend = o + tsize;
	for (uint32_t i = 0; i < n; i++) {
		if (o + 8 > tend) {
			snprintf(detail, DFU_DETAIL_MAX, "DfuSe target %u element %u: header past the target", t->alt, i);
			return -1;
		}
		dfuse_element *e = &t->elements[i];
		e->address = le32(buf + o);
		e->size = le32(buf + o + 4);
		e->offset = o + 8;
		if (e->size > tend - e->offset) {
			snprintf(detail, DFU_DETAIL_MAX, "DfuSe target %u element %u: %u bytes past the target", t->alt, i,
				 e->size);
			return -1;
		}
		if ((uint64_t)e->address + e->size > 0x100000000ull) {
			snprintf(detail, DFU_DETAIL_MAX, "DfuSe element %u: address range wraps", i);
			return -1;
		}
		o = e->offset + e->size;
	}
	if (o != tend) {
		snprintf(detail, DFU_DETAIL_MAX, "DfuSe target %u: elements do not fill its %u bytes", t->alt, tsize);
		return -1;
	}
	t->n_elements = n;
	*off = o;
	return 0;
}

static int parse_dfuse(const uint8_t *buf, size_t end, dfu_file *f, char *detail)
{
	if (end < 11 || memcmp(buf, "DfuSe", 5) || buf[5] != 1) {
		snprintf(detail, DFU_DETAIL_MAX, "bcdDFU says DfuSe but there is no DfuSe v1 prefix");
		return -1;
	}
	/* UM0391: the image size is the whole file's, suffix included (as ST's
	 * tools and dfuse-pack write it). */
	if (le32(buf + 6) != end + DFU_SUFFIX_LEN) {
		snprintf(detail, DFU_DETAIL_MAX, "DfuSe prefix says %u bytes, the file has %zu", le32(buf + 6),
			 end + DFU_SUFFIX_LEN);
		return -1;
	}
	size_t n = buf[10], o = 11;
	if (n == 0 || n > DFUSE_TARGETS_MAX) {
		snprintf(detail, DFU_DETAIL_MAX, "DfuSe file with %zu targets", n);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (parse_target(buf, end, &o, &f->targets[i], detail))
			return -1;
	if (o != end) {
		snprintf(detail, DFU_DETAIL_MAX, "%zu stray bytes after the last DfuSe target", end - o);
		return -1;
	}
	f->n_targets = n;
	f->dfuse = true;
	return 0;
}

/* Recognised only when the prefix's own fields agree with the file, as
 * dfu-prefix writes them; firmware that merely starts with similar bytes
 * stays unprefixed. */
static void detect_prefix(const uint8_t *buf, size_t len, dfu_file *f)
{
	if (len >= 8 && buf[0] == 0x01 && buf[1] == 0x00 && le32(buf + 4) == len - 8) {
		f->prefix = DFU_PREFIX_LMDFU;
		f->prefix_address = 1024u * le16(buf + 2);
		return;
	}
	if (len > 16 && (buf[0] & 0x3f) == 0x1a && (buf[1] & 0x3f) == 0x3f && le32(buf + 4) == 0 && le32(buf + 8) == 0 &&
	    le32(buf + 12) == 0xFFFFFFFFu && (size_t)le16(buf + 2) * 512 >= len - 16)
		f->prefix = DFU_PREFIX_LPC;
}

int dfu_file_parse(const uint8_t *buf, size_t len, dfu_file *f, char *detail)
{
	memset(f, 0, sizeof(*f));
	if (parse_suffix(buf, len, &f->suffix, detail))
		return -1;
	f->payload_len = len - DFU_SUFFIX_LEN;
	if (f->payload_len == 0) {
		snprintf(detail, DFU_DETAIL_MAX, "the file holds no firmware, only a suffix");
		return -1;
	}
	if (f->suffix.bcd_dfu == 0x011A)
		return parse_dfuse(buf, f->payload_len, f, detail);
	detect_prefix(buf, f->payload_len, f);
	return 0;
}

int dfu_file_for_device(const dfu_file *f, uint16_t vid, uint16_t pid, char *detail)
{
	if ((f->suffix.id_vendor != 0xFFFF && f->suffix.id_vendor != vid) ||
	    (f->suffix.id_product != 0xFFFF && f->suffix.id_product != pid)) {
		snprintf(detail, DFU_DETAIL_MAX, "the file is for %04x:%04x, the device is %04x:%04x", f->suffix.id_vendor,
			 f->suffix.id_product, vid, pid);
		return -1;
	}
	return 0;
}
