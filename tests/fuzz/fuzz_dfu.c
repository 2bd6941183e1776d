/* libFuzzer target over what a DFU file and a DFU device send us: DFU
 * files (suffix, prefixes, DfuSe containers), DfuSe memory layout strings
 * and runs of USB descriptors holding a functional descriptor.
 *
 * The first input byte picks the parser:
 *   0: the rest as a DFU file
 *   1: the rest as a memory layout string, then every page of it looked up
 *   2: the rest as a descriptor run */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dfu_file.h"
#include "dfu_layout.h"
#include "dfu_usb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char detail[DFU_DETAIL_MAX];

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: {
		dfu_file f;
		if (dfu_file_parse(data + 1, size - 1, &f, detail) == 0 && f.dfuse)
			for (size_t t = 0; t < f.n_targets; t++)
				for (size_t e = 0; e < f.targets[t].n_elements; e++)
					if (f.targets[t].elements[e].offset + f.targets[t].elements[e].size > size - 1)
						abort(); /* an element the file does not hold */
		break;
	}
	case 1: {
		char *s = malloc(size);
		dfu_layout l;
		memcpy(s, data + 1, size - 1);
		s[size - 1] = '\0';
		if (dfu_layout_parse(s, &l, detail) == 0) {
			for (size_t i = 0; i < l.n; i++) {
				uint32_t ps, psize;
				uint8_t type;
				if (!dfu_layout_page(&l, l.seg[i].start, &ps, &psize, &type))
					abort(); /* a segment's first byte must be in the layout */
			}
			dfu_layout_check(&l, l.seg[0].start, 4096, DFU_MEM_WRITABLE, detail);
		}
		free(s);
		break;
	}
	default: {
		dfu_func f;
		dfu_usb_parse_func(data + 1, (int)(size - 1 > 65535 ? 65535 : size - 1), &f);
		break;
	}
	}
	return 0;
}
