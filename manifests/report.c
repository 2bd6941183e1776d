/* Opening a signed report: the JWS checks of commands and manifests, then
 * the one check that makes it the gateway's own word: the CN of the
 * certificate that signed it is the gateway of the topic it came on. */
#include "ferry/report.h"

#include <openssl/x509.h>
#include <string.h>
#include <time.h>

#include "ferry/jws.h"

ferry_err ferry_report_open(const char *buf, size_t len, const ferry_trust *trust, const char *gateway_id, time_t now,
			    json_t **payload, ferry_status *st)
{
	return ferry_report_open_until(buf, len, trust, gateway_id, now, payload, NULL, st);
}

ferry_err ferry_report_open_until(const char *buf, size_t len, const ferry_trust *trust, const char *gateway_id,
				  time_t now, json_t **payload, int64_t *not_after, ferry_status *st)
{
	ferry_jws jws = {0};
	char cn[256] = "";
	ferry_err e;

	if (!len || buf[0] == '{')
		return ferry_fail(st, FERRY_E_MALFORMED, "an unsigned message on %s's topics", gateway_id);
	if ((e = ferry_jws_verify(buf, len, trust, now, "ferry-report", &jws, st)))
		return e;
	if (!json_is_string(json_object_get(jws.header, "typ"))) {
		ferry_jws_clear(&jws);
		return ferry_fail(st, FERRY_E_MALFORMED, "a report's header names typ ferry-report");
	}
	int n = X509_NAME_get_text_by_NID(X509_get_subject_name(jws.leaf), NID_commonName, cn, sizeof(cn));
	if (n <= 0 || (size_t)n >= sizeof(cn) || strcmp(cn, gateway_id)) {
		e = ferry_fail(st, FERRY_E_WRONG_GATEWAY, "signed by \"%.64s\", not by %s", n > 0 ? cn : "?", gateway_id);
		ferry_jws_clear(&jws);
		return e;
	}
	*payload = json_incref(jws.payload);
	if (not_after) {
		struct tm tm;
		*not_after = ASN1_TIME_to_tm(X509_get0_notAfter(jws.leaf), &tm) ? (int64_t)timegm(&tm) : 0;
	}
	ferry_jws_clear(&jws);
	return FERRY_OK;
}
