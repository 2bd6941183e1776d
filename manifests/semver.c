/* Semantic versions.  Anti-rollback rests on this comparison, so the parser is
 * strict: anything semver.org would not call a version is refused rather than
 * guessed at. */
#include "ferry/semver.h"

#include <string.h>

static bool is_ident_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z') || c == '-';
}

/* A numeric core part: digits, no leading zero, fits in 2^53 so it survives JSON. */
static const char *parse_num(const char *p, uint64_t *out)
{
	uint64_t v = 0;
	const char *start = p;

	if (*p < '0' || *p > '9')
		return NULL;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > (1ULL << 53))
			return NULL;
		p++;
	}
	if (*start == '0' && p - start > 1)
		return NULL;
	*out = v;
	return p;
}

/* Dot-separated identifiers up to `end`; numeric ones have no leading zeros
 * when `numeric_rule` (pre-release), build metadata allows them. */
static bool idents_ok(const char *p, const char *end, bool numeric_rule)
{
	while (p < end) {
		const char *q = p;
		bool all_digits = true;
		while (q < end && *q != '.') {
			if (!is_ident_char(*q))
				return false;
			if (*q < '0' || *q > '9')
				all_digits = false;
			q++;
		}
		if (q == p)
			return false;
		if (numeric_rule && all_digits && *p == '0' && q - p > 1)
			return false;
		if (q < end && q + 1 == end)
			return false; /* trailing dot */
		p = q < end ? q + 1 : q;
	}
	return true;
}

ferry_err ferry_semver_parse(const char *s, ferry_semver *out, ferry_status *st)
{
	const char *p, *pre = NULL, *build = NULL, *end;
	size_t len;

	if (!s)
		return ferry_fail(st, FERRY_E_MALFORMED, "version missing");
	len = strlen(s);
	if (len == 0 || len > FERRY_SEMVER_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "version must be 1-%d characters", FERRY_SEMVER_MAX);
	memset(out, 0, sizeof(*out));
	p = parse_num(s, &out->major);
	if (!p || *p != '.' || !(p = parse_num(p + 1, &out->minor)) || *p != '.' ||
	    !(p = parse_num(p + 1, &out->patch)))
		return ferry_fail(st, FERRY_E_MALFORMED, "version \"%.64s\" is not MAJOR.MINOR.PATCH", s);
	end = s + len;
	if (*p == '-') {
		pre = p + 1;
		build = memchr(pre, '+', (size_t)(end - pre));
		if (!idents_ok(pre, build ? build : end, true) || (build ? build : end) == pre)
			return ferry_fail(st, FERRY_E_MALFORMED, "version \"%.64s\" has a bad pre-release part", s);
	} else if (*p == '+') {
		build = p;
	} else if (*p != '\0') {
		return ferry_fail(st, FERRY_E_MALFORMED, "version \"%.64s\" has trailing characters", s);
	}
	if (build && (build + 1 == end || !idents_ok(build + 1, end, false)))
		return ferry_fail(st, FERRY_E_MALFORMED, "version \"%.64s\" has bad build metadata", s);
	memcpy(out->text, s, len + 1);
	if (pre) {
		out->pre_off = (uint8_t)(pre - s);
		out->pre_len = (uint8_t)((build ? build : end) - pre);
	}
	return FERRY_OK;
}

bool ferry_semver_valid(const char *s)
{
	ferry_semver v;
	return ferry_semver_parse(s, &v, NULL) == FERRY_OK;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

/* Compare one pre-release identifier [a, a+al) with [b, b+bl). */
static int cmp_ident(const char *a, size_t al, const char *b, size_t bl)
{
	bool an = true, bn = true;
	for (size_t i = 0; i < al; i++)
		an = an && a[i] >= '0' && a[i] <= '9';
	for (size_t i = 0; i < bl; i++)
		bn = bn && b[i] >= '0' && b[i] <= '9';
	if (an && bn) /* no leading zeros: longer is larger */
		return al != bl ? cmp_u64(al, bl) : memcmp(a, b, al) < 0 ? -1 : memcmp(a, b, al) > 0;
	if (an != bn)
		return an ? -1 : 1; /* numeric identifiers sort before alphanumeric */
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? (c < 0 ? -1 : 1) : cmp_u64(al, bl);
}

int ferry_semver_cmp(const ferry_semver *a, const ferry_semver *b)
{
	int c;
	if ((c = cmp_u64(a->major, b->major)) || (c = cmp_u64(a->minor, b->minor)) ||
	    (c = cmp_u64(a->patch, b->patch)))
		return c;
	if (!a->pre_len || !b->pre_len) /* a release outranks its pre-releases */
		return a->pre_len == b->pre_len ? 0 : (a->pre_len ? -1 : 1);

	const char *pa = a->text + a->pre_off, *ea = pa + a->pre_len;
	const char *pb = b->text + b->pre_off, *eb = pb + b->pre_len;
	while (pa < ea && pb < eb) {
		const char *qa = memchr(pa, '.', (size_t)(ea - pa)), *qb = memchr(pb, '.', (size_t)(eb - pb));
		if (!qa)
			qa = ea;
		if (!qb)
			qb = eb;
		if ((c = cmp_ident(pa, (size_t)(qa - pa), pb, (size_t)(qb - pb))))
			return c;
		pa = qa < ea ? qa + 1 : ea;
		pb = qb < eb ? qb + 1 : eb;
	}
	return (pa < ea) - (pb < eb); /* more identifiers is larger */
}
