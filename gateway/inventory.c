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

/* Caller holds adapters_lock. */
char *eng_inventory_json(ferry_engine *e)
{
	json_t *inv = json_pack("{s:{s:s,s:s,s:o},s:o,s:I}", "gateway", "id", e->cfg->gateway_id, "ferryd",
				FERRY_VERSION, "attributes", gateway_attributes(e->cfg), "devices",
				ferry_adapters_inventory(e->adapters), "ts", (json_int_t)eng_now());
	char *s = inv ? json_dumps(inv, JSON_COMPACT) : NULL;

	json_decref(inv);
	return s;
}
