/* The inventory: the gateway, its built-in and custom attributes, and every
 * subdevice the adapters report, with component versions.  Published
 * retained, so a campaign tool reading the broker sees the latest. */
#include <stdlib.h>
#include <sys/utsname.h>

#include "engine_int.h"

static json_t *gateway_attributes(const ferry_config *cfg)
{
	json_t *a = json_object();
	struct utsname u;

	if (uname(&u) == 0) {
		json_object_set_new(a, "arch", json_string(u.machine));
		json_object_set_new(a, "kernel", json_string(u.release));
	}
	/* custom attributes from the config win over built-in ones of the same name */
	if (cfg->attributes)
		json_object_update(a, cfg->attributes);
	return a;
}

/* The devices attached now ("present": true), then those seen before and
 * absent now ("present": false, with when they were last seen), so that an
 * operator sees every device an update may wait for. */
static json_t *devices(ferry_engine *e)
{
	json_t *now = ferry_adapters_inventory(e->adapters), *mem = NULL, *d, *m;
	size_t i, k;

	json_array_foreach(now, i, d)
		json_object_set_new(d, "present", json_true());
	if (ferry_journal_devices(e->journal, &mem, NULL) == FERRY_OK)
		json_array_foreach(mem, i, m) {
			bool here = false;
			json_array_foreach(now, k, d)
				here |= json_equal(json_object_get(d, "id"), json_object_get(m, "id")) &&
					json_equal(json_object_get(d, "adapter"), json_object_get(m, "adapter"));
			if (here)
				continue;
			json_object_set_new(m, "present", json_false());
			json_array_append(now, m);
		}
	json_decref(mem);
	return now;
}

char *eng_inventory_json(ferry_engine *e)
{
	json_t *inv = json_pack("{s:{s:s,s:s,s:o},s:o,s:I}", "gateway", "id", e->cfg->gateway_id, "ferryd",
				FERRY_VERSION, "attributes", gateway_attributes(e->cfg), "devices", devices(e), "ts",
				(json_int_t)eng_now());
	/* what an operator wraps content keys for (docs/encryption.md) */
	if (inv && e->kek_cert)
		json_object_set_new(json_object_get(inv, "gateway"), "decryption_cert", json_string(e->kek_cert));
	char *s = inv ? json_dumps(inv, JSON_COMPACT) : NULL;

	json_decref(inv);
	return s;
}
