/* dfu-inspect FILE [--device VID:PID]: parse a DFU or DfuSe file as the
 * usb-dfu adapter will, print what it holds, and exit 1 naming what is
 * wrong.  Used by the interop tests against dfu-util's own tools, and handy
 * for checking a file before signing it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfu_file.h"

int main(int argc, char **argv)
{
	static uint8_t buf[16 * 1024 * 1024];
	char detail[DFU_DETAIL_MAX];
	dfu_file f;
	FILE *fp;
	size_t n;
	unsigned vid, pid;

	if (argc != 2 && !(argc == 4 && !strcmp(argv[2], "--device"))) {
		fprintf(stderr, "usage: dfu-inspect FILE [--device VID:PID]\n");
		return 2;
	}
	if (!(fp = fopen(argv[1], "rb"))) {
		perror(argv[1]);
		return 2;
	}
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	if (dfu_file_parse(buf, n, &f, detail)) {
		printf("refused: %s\n", detail);
		return 1;
	}
	if (argc == 4 && (sscanf(argv[3], "%x:%x", &vid, &pid) != 2 ||
			  dfu_file_for_device(&f, (uint16_t)vid, (uint16_t)pid, detail))) {
		printf("refused: %s\n", argc == 4 ? detail : "bad --device");
		return 1;
	}
	printf("suffix: vid %04x pid %04x device %04x dfu %04x crc %08x payload %zu\n", f.suffix.id_vendor,
	       f.suffix.id_product, f.suffix.bcd_device, f.suffix.bcd_dfu, f.suffix.crc, f.payload_len);
	if (f.prefix == DFU_PREFIX_LMDFU)
		printf("prefix: TI Stellaris, address 0x%08x (sent with the payload)\n", f.prefix_address);
	else if (f.prefix == DFU_PREFIX_LPC)
		printf("prefix: NXP LPC, unencrypted (sent with the payload)\n");
	for (size_t t = 0; t < f.n_targets; t++)
		for (size_t e = 0; e < f.targets[t].n_elements; e++)
			printf("target %u element %zu: 0x%08x %u bytes\n", f.targets[t].alt, e,
			       f.targets[t].elements[e].address, f.targets[t].elements[e].size);
	return 0;
}
