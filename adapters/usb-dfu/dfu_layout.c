/* DfuSe memory layout strings; see dfu_layout.h for the grammar. */
#include "dfu_layout.h"

#include <stdio.h>
#include <string.h>

#include "dfu_file.h"

static int bad(char *detail, const char *s, const char *p, const char *what)
{
	snprintf(detail, DFU_DETAIL_MAX, "memory layout \"%.80s\": %s at column %d", s, what, (int)(p - s) + 1);
	return -1;
}

/* Decimal or 0x-hex digits into *v, at most 32 bits.  Returns the end. */
static const char *number(const char *p, int base, uint64_t *v)
{
	const char *start = p;
	*v = 0;
	for (;; p++) {
		int d;
		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = *p - 'A' + 10;
		else
			break;
		*v = *v * (uint64_t)base + (uint64_t)d;
		if (*v > 0xFFFFFFFFull)
			return NULL;
	}
	return p == start ? NULL : p;
}

static int segments(const char *s, const char **pp, uint64_t start, dfu_layout *l, char *detail)
{
	const char *p = *pp;
	uint64_t at = start;

	for (;;) {
		uint64_t count, size;
		const char *q;
		if (!(q = number(p, 10, &count)) || *q != '*')
			return bad(detail, s, p, "expected a page count and '*'");
		p = q + 1;
		if (!(q = number(p, 10, &size)))
			return bad(detail, s, p, "expected a page size");
		p = q;
		switch (*p) {
		case ' ':
		case 'B': break;
		case 'K': size *= 1024; break;
		case 'M': size *= 1024 * 1024; break;
		default: return bad(detail, s, p, "the unit is not ' ', B, K or M");
		}
		p++;
		if (*p < 'a' || *p > 'g')
			return bad(detail, s, p, "the memory type is not a letter a..g");
		if (count == 0 || size == 0 || size > 0xFFFFFFFFull)
			return bad(detail, s, p, "a segment of no pages or of a page size beyond 32 bits");
		if (at + count * size > 0x100000000ull)
			return bad(detail, s, p, "the region runs past the 32-bit address space");
		if (l->n == DFU_LAYOUT_SEGMENTS_MAX)
			return bad(detail, s, p, "too many segments");
		l->seg[l->n++] = (dfu_segment){.start = (uint32_t)at,
		                               .page_size = (uint32_t)size,
		                               .pages = (uint32_t)count,
		                               .type = (uint8_t)(*p - 'a' + 1)};
		at += count * size;
		p++;
		if (*p != ',')
			break;
		p++;
	}
	*pp = p;
	return 0;
}

int dfu_layout_parse(const char *s, dfu_layout *l, char *detail)
{
	const char *p = s, *slash;
	size_t n;

	memset(l, 0, sizeof(*l));
	if (*p != '@')
		return bad(detail, s, p, "it does not start with '@'");
	p++;
	if (!(slash = strchr(p, '/')))
		return bad(detail, s, p, "no '/' after the name");
	n = (size_t)(slash - p);
	while (n && p[n - 1] == ' ')
		n--;
	if (n >= sizeof(l->name))
		return bad(detail, s, p, "the name is too long");
	memcpy(l->name, p, n);
	p = slash;
	while (*p == '/') {
		uint64_t start;
		const char *q;
		p++;
		if (p[0] != '0' || (p[1] != 'x' && p[1] != 'X') || !(q = number(p + 2, 16, &start)) || *q != '/')
			return bad(detail, s, p, "expected a 0x start address and '/'");
		p = q + 1;
		if (segments(s, &p, start, l, detail))
			return -1;
	}
	if (*p)
		return bad(detail, s, p, "unexpected text");
	if (!l->n)
		return bad(detail, s, p, "no region");
	return 0;
}

bool dfu_layout_page(const dfu_layout *l, uint32_t addr, uint32_t *page_start, uint32_t *page_size, uint8_t *type)
{
	for (size_t i = 0; i < l->n; i++) {
		const dfu_segment *g = &l->seg[i];
		uint64_t end = (uint64_t)g->start + (uint64_t)g->pages * g->page_size;
		if (addr < g->start || addr >= end)
			continue;
		*page_start = g->start + (addr - g->start) / g->page_size * g->page_size;
		*page_size = g->page_size;
		*type = g->type;
		return true;
	}
	return false;
}

int dfu_layout_check(const dfu_layout *l, uint32_t addr, uint32_t len, uint8_t need, char *detail)
{
	uint64_t a = addr, end = (uint64_t)addr + len;

	while (a < end) {
		uint32_t ps, size;
		uint8_t type;
		if (!dfu_layout_page(l, (uint32_t)a, &ps, &size, &type)) {
			snprintf(detail, DFU_DETAIL_MAX, "address 0x%08llx is outside the device's \"%s\" memory",
			         (unsigned long long)a, l->name);
			return -1;
		}
		if ((type & need) != need) {
			snprintf(detail, DFU_DETAIL_MAX, "address 0x%08llx of \"%s\" is not %s%s",
			         (unsigned long long)a, l->name,
			         (need & DFU_MEM_WRITABLE) && !(type & DFU_MEM_WRITABLE) ? "writable" : "",
			         (need & DFU_MEM_ERASABLE) && !(type & DFU_MEM_ERASABLE) ? " erasable" : "");
			return -1;
		}
		a = (uint64_t)ps + size;
	}
	return 0;
}
