/* MCUboot image header and TLV area (see mcuboot.h).
 *
 * Layout, little-endian: a header of hdr_size bytes (magic, load address,
 * hdr_size u16, protected TLV size u16, img_size u32, flags, version major
 * u8, minor u8, revision u16, build u32), the payload of img_size bytes, then
 * an optional protected TLV block (magic 0x6908) and the unprotected one
 * (0x6907), each {magic u16, total length u16} followed by {type u16, len
 * u16, value}.  Every length read from the file is checked against the
 * file's end before it is followed: the image comes from the cloud and is
 * parsed before the device sees it. */
#include "mcuboot.h"

#include <stdio.h>
#include <string.h>

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int mcuboot_parse(const uint8_t *buf, size_t len, mcuboot_info *out, const char **why)
{
	if (len < 32 || le32(buf) != MCUBOOT_MAGIC) {
		*why = "is not an MCUboot image (no magic)";
		return -1;
	}
	uint16_t hdr = le16(buf + 8);
	uint32_t size = le32(buf + 12);
	if (hdr < 32 || (uint64_t)hdr + size + 4 > len) {
		*why = "MCUboot header sizes do not fit";
		return -1;
	}
	snprintf(out->version, sizeof(out->version), "%u.%u.%u", buf[20], buf[21], (unsigned)le16(buf + 22));
	size_t t = (size_t)hdr + size;
	/* skip a protected TLV block, then look in the unprotected one */
	if (le16(buf + t) == 0x6908)
		t += le16(buf + t + 2);
	if (t + 4 <= len && le16(buf + t) == 0x6907) {
		size_t end = t + le16(buf + t + 2);
		for (size_t q = t + 4; q + 4 <= end && end <= len;) {
			uint16_t type = le16(buf + q), l = le16(buf + q + 2);
			if (type == 0x10 && l == 32 && q + 4 + 32 <= end) {
				memcpy(out->hash, buf + q + 4, 32);
				return 0;
			}
			q += 4 + (size_t)l;
		}
	}
	*why = "no SHA256 TLV";
	return -1;
}

int mcuboot_version_matches(const char *header_version, const char *manifest_version)
{
	size_t n = strlen(header_version);
	return !strncmp(manifest_version, header_version, n) &&
	       (manifest_version[n] == '\0' || manifest_version[n] == '-' || manifest_version[n] == '+');
}
