/* Commands: what each operation checks before anything changes, and what it
 * starts.  Every command gets exactly one reply.  Refusals change nothing but
 * the replay store (a refused command's jti is still spent). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bases.h"
#include "engine_int.h"
#include "ferry/jwe.h"
#include "ferry/jws.h"
#include "log.h"

typedef struct reply {
	const ferry_command *cmd; /* NULL when the command did not verify */
	ferry_err code;
	const char *detail;
	json_t *status; /* update.status: where the update stands */
} reply;

static void send_reply(ferry_engine *e, const reply *r)
{
	json_t *j = json_object();
	ferry_status st = {0};
	char *body;

	json_object_set_new(j, "jti", r->cmd ? json_string(r->cmd->jti) : json_null());
	if (r->cmd) {
		json_object_set_new(j, "op", json_string(ferry_op_name(r->cmd->op)));
		if (r->cmd->update_id[0])
			json_object_set_new(j, "update_id", json_string(r->cmd->update_id));
	}
	json_object_set_new(j, "result", json_string(r->code ? "refused" : "accepted"));
	if (r->code) {
		json_object_set_new(j, "reason", json_string(ferry_err_code(r->code)));
		json_object_set_new(j, "detail", json_string(r->detail ? r->detail : ""));
	}
	if (r->status)
		json_object_set(j, "status", r->status);
	int64_t now_ms = eng_now_ms();
	json_object_set_new(j, "ts", json_integer(now_ms / 1000));
	json_object_set_new(j, "ts_ms", json_integer(now_ms));
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	ferry_log(r->code ? LOG_WARNING : LOG_INFO, "%s %s: %s%s%s", r->cmd ? ferry_op_name(r->cmd->op) : "command",
		  r->cmd ? r->cmd->update_id : "", r->code ? ferry_err_code(r->code) : "accepted",
		  r->code ? ": " : "", r->code && r->detail ? r->detail : "");
	if (body && e->cloud) {
		pthread_mutex_lock(&e->pub_lock);
		if (ferry_cloud_publish(e->cloud, "reply", body, false, NULL, &st))
			ferry_log(LOG_WARNING, "reply not published: %s", st.detail);
		pthread_mutex_unlock(&e->pub_lock);
	}
	free(body);
}

static void refuse(ferry_engine *e, const ferry_command *c, const ferry_status *st)
{
	send_reply(e, &(reply){.cmd = c, .code = st->code, .detail = st->detail});
}

ferry_err eng_load_manifest(ferry_engine *e, const ferry_jupdate *u, int64_t at, ferry_manifest *m, ferry_status *st)
{
	return ferry_manifest_verify(u->manifest, strlen(u->manifest), e->manifest_trust, (time_t)at,
				     e->cfg->trust.clock_skew_s, m, NULL, st);
}

/* The devices the gateway knows: those attached now, then those seen before
 * and remembered in the journal (absent now: an install waits for them). */
typedef struct known {
	ferry_devinfo *d;
	size_t n;
} known;

static void known_free(known *k)
{
	free(k->d);
	k->d = NULL;
	k->n = 0;
}

static ferry_err known_devices(ferry_engine *e, known *k, ferry_status *st)
{
	json_t *mem = NULL, *r;
	size_t i, n_now;
	ferry_err err;

	eng_discover(e, NULL);
	k->d = ferry_adapters_devices(e->adapters, &n_now);
	k->n = n_now;
	if (!k->d)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	if ((err = ferry_journal_devices(e->journal, &mem, st))) {
		known_free(k);
		return err;
	}
	json_array_foreach(mem, i, r) {
		ferry_devinfo d;
		const char *adapter;
		bool dup = false;
		if (!ferry_device_from_json(r, &d.dev, &adapter) || !(d.ad = ferry_adapters_find(e->adapters, adapter)))
			continue;
		for (size_t j = 0; j < n_now && !dup; j++)
			dup = k->d[j].ad == d.ad && !strcmp(k->d[j].dev.id, d.dev.id);
		if (dup)
			continue;
		ferry_devinfo *more = realloc(k->d, (k->n + 1) * sizeof(*more));
		if (!more) {
			json_decref(mem);
			known_free(k);
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		}
		k->d = more;
		k->d[k->n++] = d;
	}
	json_decref(mem);
	return FERRY_OK;
}

/* What update.request decides for one manifest. */
typedef struct plan {
	ferry_jstep_new steps[FERRY_STEPS_MAX];
	bool step_done[FERRY_STEPS_MAX];     /* the device runs this version already */
	char step_version[FERRY_STEPS_MAX][65];
	size_t n;
	bool settled[FERRY_COMPONENTS_MAX]; /* every device of it runs this version already */
} plan;

/* No device takes c: say what the gateway does know of its adapter. */
static ferry_err no_device(const ferry_component *c, const known *k, const ferry_adapter *ad, ferry_status *st)
{
	char seen[160] = "";
	size_t used = 0, count = 0;

	for (size_t i = 0; i < k->n; i++) {
		if (k->d[i].ad != ad)
			continue;
		count++;
		if (used < sizeof(seen) - 1)
			used += (size_t)snprintf(seen + used, sizeof(seen) - used, "%s%s", used ? ", " : "",
						 k->d[i].dev.id);
	}
	return ferry_fail(st, FERRY_E_NO_MATCHING_DEVICE,
			  "%s: no %s device with vendor %s, class %s%s serves component %s (%zu known%s%s)", c->name,
			  c->adapter, c->vendor_id, c->class_id, c->n_match ? " and the given match" : "", c->name,
			  count, count ? ": " : "", seen);
}

/* The version a device runs of component c: what it reports, else (a
 * device that cannot tell) the last one ferry installed on it, so that
 * anti-rollback survives a device that forgets. */
static const char *running_version(ferry_engine *e, const ferry_devinfo *d, const char *component, char buf[65])
{
	const char *v = ferry_device_version(&d->dev, component);
	bool found = false;

	if (v && v[0])
		return v;
	if (ferry_journal_installed(e->journal, component, d->dev.id, buf, &found, NULL) == FERRY_OK && found)
		return buf;
	return NULL;
}

/* What can stop a component before any byte moves; its steps go to p. */
static ferry_err bind_component(ferry_engine *e, const ferry_manifest *m, size_t ci, const known *k, plan *p,
				ferry_status *st)
{
	const ferry_component *c = &m->c[ci];
	ferry_adapter *ad = ferry_adapters_find(e->adapters, c->adapter);
	size_t first = p->n, done = 0;

	if (!ad)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: no adapter \"%s\" on this gateway", c->name, c->adapter);
	if (!ferry_adapter_takes_format(ad, ferry_format_name(c->format)))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: adapter %s does not take format %s", c->name,
				  c->adapter, ferry_format_name(c->format));
	if (c->encrypted && !e->kek)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: an encrypted image, and this gateway has no "
				  "decryption.key", c->name);
	for (size_t i = 0; i < k->n; i++) {
		const ferry_devinfo *d = &k->d[i];
		char buf[65];
		const char *running;
		ferry_semver cur;
		ferry_err lerr;
		if (d->ad != ad || !ferry_device_matches(ad, &d->dev, c))
			continue;
		if ((lerr = eng_link_check(e, c, &d->dev, st)))
			return lerr;
		if (p->n == FERRY_STEPS_MAX)
			return ferry_fail(st, FERRY_E_UNSUPPORTED, "the update would have more than %d steps (components "
					  "times devices)", FERRY_STEPS_MAX);
		p->steps[p->n] = (ferry_jstep_new){.component = c->name, .device = d->dev.id, .adapter = c->adapter};
		p->step_done[p->n] = false;
		running = running_version(e, d, c->name, buf);
		if (running && ferry_semver_parse(running, &cur, NULL) == FERRY_OK) {
			int cmp = ferry_semver_cmp(&c->version, &cur);
			if (cmp < 0 && !m->allow_downgrade)
				return ferry_fail(st, FERRY_E_DOWNGRADE, "%s: %s is older than %s installed on %s", c->name,
						  c->version.text, cur.text, d->dev.id);
			if (cmp == 0) {
				p->step_done[p->n] = true;
				snprintf(p->step_version[p->n], sizeof(p->step_version[0]), "%s", running);
				done++;
			}
		}
		p->n++;
	}
	if (p->n == first)
		return no_device(c, k, ad, st);
	p->settled[ci] = done == p->n - first;
	return FERRY_OK;
}

/* Does component a come after component b, directly or through others? */
static bool comes_after(const ferry_manifest *m, size_t a, size_t b, int depth)
{
	for (size_t k = 0; k < m->c[a].n_after && depth < FERRY_COMPONENTS_MAX; k++)
		if (m->c[a].after[k] == b || comes_after(m, m->c[a].after[k], b, depth + 1))
			return true;
	return false;
}

/* All or nothing holds only if at most one device cannot be reverted, and
 * that one goes last: no revertible component may come after it. */
static ferry_err check_atomic(ferry_engine *e, const ferry_manifest *m, const plan *p, ferry_status *st)
{
	const ferry_jstep_new *one = NULL;
	size_t count = 0;

	for (size_t i = 0; i < p->n; i++) {
		if (p->step_done[i] || ferry_adapter_revertible(ferry_adapters_find(e->adapters, p->steps[i].adapter)))
			continue;
		if (!one)
			one = &p->steps[i];
		count++;
	}
	if (count > 1)
		return ferry_fail(st, FERRY_E_UNSUPPORTED,
				  "atomic: %zu devices cannot be reverted (%s on %s, through %s, is one): an all-or-nothing "
				  "update can hold at most one such device, activated last",
				  count, one->component, one->device, one->adapter);
	if (!one)
		return FERRY_OK;
	size_t last = 0;
	while (last < m->n && strcmp(m->c[last].name, one->component))
		last++;
	for (size_t i = 0; i < m->n; i++)
		if (i != last && comes_after(m, i, last, 0))
			return ferry_fail(st, FERRY_E_UNSUPPORTED,
					  "atomic: %s comes after %s, whose device cannot be reverted and so must be "
					  "activated last",
					  m->c[i].name, one->component);
	return FERRY_OK;
}

/* Bytes still to fetch: components not settled and not in the store. */
static int64_t bytes_needed(ferry_engine *e, const ferry_manifest *m, const plan *p)
{
	char path[FERRY_PATH_MAX];
	int64_t sum = 0;

	for (size_t i = 0; i < m->n; i++)
		if (!p->settled[i] && !ferry_store_has(e->store, m->c[i].sha256, path))
			/* an encrypted image: its ciphertext and plaintext at once */
			sum += m->c[i].size + (m->c[i].encrypted ? m->c[i].enc.size : 0);
	return sum;
}

/* The `allowed` reports (with the devices each component goes to) and the
 * `already_installed` ones, in install order. */
static ferry_err report_admitted(ferry_engine *e, const char *uid, const ferry_manifest *m, const plan *p,
				 ferry_status *st)
{
	ferry_err err = FERRY_OK;

	for (size_t k = 0; k < m->n && !err; k++) {
		const ferry_component *c = &m->c[m->order[k]];
		json_t *devs = json_array();
		for (size_t i = 0; i < p->n; i++)
			if (!strcmp(p->steps[i].component, c->name) && !p->step_done[i])
				json_array_append_new(devs, json_string(p->steps[i].device));
		if (!p->settled[m->order[k]]) {
			ferry_transition t = {.update_id = uid, .component = c->name, .stage = FERRY_S_ALLOWED,
					      .devices = devs, .total = -1, .ts_ms = eng_now_ms()};
			err = eng_report(e, &t, st);
		}
		json_decref(devs);
		for (size_t i = 0; i < p->n && !err; i++) {
			if (strcmp(p->steps[i].component, c->name) || !p->step_done[i])
				continue;
			ferry_transition t = {.update_id = uid, .component = c->name, .device = p->steps[i].device,
					      .stage = FERRY_S_ALREADY_INSTALLED, .version = p->step_version[i],
					      .total = -1, .ts_ms = eng_now_ms()};
			err = eng_report(e, &t, st);
		}
	}
	return err;
}

/* Can component c be fetched with the links of cmd?  A whole-image link
 * always does; a delta's link ("NAME@BASE") does when the gateway holds its
 * base.  Delta links must name deltas of the manifest. */
static ferry_err check_links(ferry_engine *e, const ferry_command *cmd, const ferry_component *c, ferry_status *st)
{
	bool full = false, usable = false;
	size_t deltas = 0;

	for (size_t l = 0; l < cmd->n_links; l++) {
		const ferry_link *k = &cmd->links[l];
		const ferry_delta *d;
		char path[FERRY_PATH_MAX];
		if (strcmp(k->component, c->name))
			continue;
		if (!k->delta) {
			full = true;
			continue;
		}
		if (!(d = eng_delta_of(c, k->base_hex)))
			return ferry_fail(st, FERRY_E_MALFORMED, "links: %s@%.12s... names no delta of component %s",
					  c->name, k->base_hex, c->name);
		deltas++;
		usable = usable || eng_delta_base(e, c, d->base_sha256, path);
	}
	if (full || usable)
		return FERRY_OK;
	if (deltas)
		return ferry_fail(st, FERRY_E_BASE_MISSING,
				  "%s: the gateway holds none of the %zu base%s its delta links need, and no whole image "
				  "is linked", c->name, deltas, deltas == 1 ? "" : "s");
	return ferry_fail(st, FERRY_E_MALFORMED, "links: no link for component %s", c->name);
}

/* Every wrapped key of cmd names an encrypted component of m and unwraps
 * with this gateway's key; every encrypted component still to fetch has
 * one.  Nothing is kept of the unwrapped keys here. */
static ferry_err check_keys(ferry_engine *e, const ferry_command *cmd, const ferry_manifest *m, const bool *needed,
			    ferry_status *st)
{
	for (size_t k = 0; k < cmd->n_keys; k++) {
		const ferry_component *c = ferry_manifest_find(m, cmd->keys[k].component);
		uint8_t key[32];
		ferry_err err;
		if (!c || !c->encrypted)
			return ferry_fail(st, FERRY_E_MALFORMED, "keys: %s is not an encrypted component of the manifest",
					  cmd->keys[k].component);
		err = ferry_jwe_unwrap(cmd->keys[k].jwe, e->kek, key, st);
		OPENSSL_cleanse(key, sizeof(key));
		if (err) {
			ferry_status_prefix(st, "%s: ", c->name);
			return err;
		}
	}
	for (size_t i = 0; i < m->n; i++) {
		bool have = false;
		if (!m->c[i].encrypted || !needed[i])
			continue;
		for (size_t k = 0; k < cmd->n_keys && !have; k++)
			have = !strcmp(cmd->keys[k].component, m->c[i].name);
		if (!have)
			return ferry_fail(st, FERRY_E_MALFORMED, "keys: no wrapped key for %s, whose image is encrypted",
					  m->c[i].name);
	}
	return FERRY_OK;
}

static const char *key_of(const ferry_command *cmd, const char *component)
{
	for (size_t k = 0; k < cmd->n_keys; k++)
		if (!strcmp(cmd->keys[k].component, component))
			return cmd->keys[k].jwe;
	return NULL;
}

/* update.request and the first half of update.deploy. */
static ferry_err admit(ferry_engine *e, const ferry_command *cmd, bool deploy, ferry_status *st)
{
	ferry_manifest m;
	ferry_jupdate u = {0}, old;
	const char *names[FERRY_COMPONENTS_MAX], *links[FERRY_COMPONENTS_MAX], *keys[FERRY_COMPONENTS_MAX];
	ferry_jdelta_link dlinks[FERRY_LINKS_MAX];
	size_t n_dlinks = 0;
	bool settled[FERRY_COMPONENTS_MAX];
	plan *p = NULL;
	known k = {0};
	ferry_err err;
	int64_t need, avail, last;

	if (ferry_journal_update_get(e->journal, cmd->update_id, &old, NULL) == FERRY_OK) {
		err = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s exists already (%s)", cmd->update_id,
				 ferry_ustate_name(old.state));
		ferry_jupdate_free(&old);
		return err;
	}
	if ((err = ferry_manifest_verify(cmd->manifest, strlen(cmd->manifest), e->manifest_trust, eng_now(),
					 e->cfg->trust.clock_skew_s, &m, NULL, st)))
		return err;
	if ((err = ferry_journal_last_sequence(e->journal, &last, st)))
		goto out;
	if (m.sequence <= last) {
		err = ferry_fail(st, FERRY_E_STALE_SEQUENCE, "manifest sequence %lld is not above %lld",
				 (long long)m.sequence, (long long)last);
		goto out;
	}
	if (!(p = calloc(1, sizeof(*p)))) {
		err = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if ((err = known_devices(e, &k, st)))
		goto out;
	for (size_t i = 0; i < m.n && !err; i++)
		err = bind_component(e, &m, m.order[i], &k, p, st);
	if (!err && m.atomic)
		err = check_atomic(e, &m, p, st);
	for (size_t i = 0; i < m.n && !err && deploy; i++)
		if (!p->settled[i])
			err = check_links(e, cmd, &m.c[i], st);
	if (!err && deploy) {
		bool needed[FERRY_COMPONENTS_MAX];
		for (size_t i = 0; i < m.n; i++)
			needed[i] = !p->settled[i];
		err = check_keys(e, cmd, &m, needed, st);
	}
	if (err)
		goto out;
	need = bytes_needed(e, &m, p);
	avail = ferry_store_free(e->store);
	/* bases kept for deltas give way to an update that needs the room, and
	 * only when that makes it fit: a refusal changes nothing */
	if (need > avail && need <= avail + eng_bases_spare(e, &m, false)) {
		eng_bases_spare(e, &m, true);
		avail = ferry_store_free(e->store);
	}
	if (need > avail) {
		err = ferry_fail(st, FERRY_E_INSUFFICIENT_SPACE, "needs %lld bytes, %lld free", (long long)need,
				 (long long)avail);
		goto out;
	}
	snprintf(u.id, sizeof(u.id), "%s", cmd->update_id);
	u.state = FERRY_U_ALLOWED;
	u.manifest = cmd->manifest;
	u.sequence = m.sequence;
	u.expires = m.expires ? m.expires : cmd->exp;
	u.deploy = deploy;
	u.atomic = m.atomic;
	u.created = eng_now();
	for (size_t i = 0; i < m.n; i++) {
		names[i] = m.c[m.order[i]].name;
		settled[i] = p->settled[m.order[i]];
		links[i] = NULL;
		keys[i] = deploy && !settled[i] ? key_of(cmd, names[i]) : NULL;
		for (size_t l = 0; l < cmd->n_links && deploy && !settled[i]; l++) {
			const ferry_link *lk = &cmd->links[l];
			if (strcmp(lk->component, names[i]))
				continue;
			if (!lk->delta)
				links[i] = lk->url;
			else
				dlinks[n_dlinks++] = (ferry_jdelta_link){.component = names[i], .base_hex = lk->base_hex,
									 .url = lk->url};
		}
	}
	if ((err = ferry_journal_update_add(e->journal, &u, names, settled, links, keys, m.n, dlinks, n_dlinks, p->steps,
					    p->n, st)))
		goto out;
	err = report_admitted(e, u.id, &m, p, st);
out:
	known_free(&k);
	free(p);
	ferry_manifest_free(&m);
	return err;
}

static ferry_err need_state(ferry_engine *e, const ferry_command *cmd, const ferry_ustate *ok, size_t n,
			    ferry_jupdate *u, ferry_status *st)
{
	ferry_err err = ferry_journal_update_get(e->journal, cmd->update_id, u, st);

	if (err)
		return err == FERRY_E_UNKNOWN_UPDATE ? ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", cmd->update_id)
						     : err;
	for (size_t i = 0; i < n; i++)
		if (u->state == ok[i])
			return FERRY_OK;
	err = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s is %s", u->id, ferry_ustate_name(u->state));
	ferry_jupdate_free(u);
	return err;
}

/* Links for every component that still needs bytes; they are secrets kept
 * in the journal only until used. */
static ferry_err store_links(ferry_engine *e, const ferry_command *cmd, const ferry_jupdate *u, ferry_status *st)
{
	ferry_jcomponent *cs;
	ferry_manifest m;
	size_t n;
	ferry_err err = ferry_journal_components(e->journal, cmd->update_id, &cs, &n, st);

	if (err)
		return err;
	/* as it was when the update was admitted */
	if ((err = eng_load_manifest(e, u, u->created, &m, st))) {
		ferry_jcomponents_free(cs, n);
		return err;
	}
	for (size_t i = 0; !err && i < n; i++) {
		const ferry_component *c = NULL;
		if (cs[i].stage != FERRY_S_ALLOWED && cs[i].stage != FERRY_S_DOWNLOADING)
			continue;
		for (size_t k = 0; k < m.n && !c; k++)
			if (!strcmp(m.c[k].name, cs[i].name))
				c = &m.c[k];
		err = c ? check_links(e, cmd, c, st)
			: ferry_fail(st, FERRY_E_INTERNAL, "journal: component %s is not in the manifest", cs[i].name);
	}
	if (!err) {
		bool needed[FERRY_COMPONENTS_MAX] = {false};
		for (size_t k = 0; k < m.n; k++)
			for (size_t i = 0; i < n; i++)
				if (!strcmp(m.c[k].name, cs[i].name))
					needed[k] = cs[i].stage == FERRY_S_ALLOWED || cs[i].stage == FERRY_S_DOWNLOADING;
		err = check_keys(e, cmd, &m, needed, st);
	}
	for (size_t i = 0; !err && i < n; i++) {
		const char *jwe = key_of(cmd, cs[i].name);
		if (jwe && (cs[i].stage == FERRY_S_ALLOWED || cs[i].stage == FERRY_S_DOWNLOADING))
			err = ferry_journal_set_key(e->journal, cmd->update_id, cs[i].name, jwe, st);
	}
	for (size_t i = 0; !err && i < n; i++) {
		if (cs[i].stage != FERRY_S_ALLOWED && cs[i].stage != FERRY_S_DOWNLOADING)
			continue;
		for (size_t k = 0; k < cmd->n_links && !err; k++) {
			const ferry_link *l = &cmd->links[k];
			if (strcmp(l->component, cs[i].name))
				continue;
			err = l->delta ? ferry_journal_set_delta_link(e->journal, cmd->update_id, cs[i].name, l->base_hex,
								      l->url, st)
				       : ferry_journal_set_link(e->journal, cmd->update_id, cs[i].name, l->url, st);
		}
	}
	ferry_manifest_free(&m);
	ferry_jcomponents_free(cs, n);
	return err;
}

static ferry_err start_stage(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	static const ferry_ustate for_download[] = {FERRY_U_ALLOWED, FERRY_U_DOWNLOADING};
	static const ferry_ustate for_check[] = {FERRY_U_DOWNLOADED};
	static const ferry_ustate for_install[] = {FERRY_U_VERIFIED};
	ferry_jupdate u;
	ferry_err err;

	switch (cmd->op) {
	case FERRY_OP_UPDATE_DOWNLOAD:
		if ((err = need_state(e, cmd, for_download, 2, &u, st)))
			return err;
		err = store_links(e, cmd, &u, st);
		if (!err && u.state == FERRY_U_ALLOWED)
			err = ferry_journal_update_move(e->journal, u.id, FERRY_U_ALLOWED, FERRY_U_DOWNLOADING, st);
		ferry_jupdate_free(&u);
		/* a second download with fresh links while one runs: the running
		 * job reads them when it retries; a queued one is harmless */
		if (!err && !eng_enqueue(e, FERRY_JOB_DOWNLOAD, cmd->update_id))
			err = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		return err;
	case FERRY_OP_UPDATE_CHECK:
		if ((err = need_state(e, cmd, for_check, 1, &u, st)))
			return err;
		ferry_jupdate_free(&u);
		if ((err = ferry_journal_update_move(e->journal, cmd->update_id, FERRY_U_DOWNLOADED, FERRY_U_VERIFYING,
						      st)))
			return err;
		return eng_enqueue(e, FERRY_JOB_CHECK, cmd->update_id) ? FERRY_OK
									: ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	case FERRY_OP_UPDATE_INSTALL:
		if ((err = need_state(e, cmd, for_install, 1, &u, st)))
			return err;
		ferry_jupdate_free(&u);
		if ((err = ferry_journal_update_move(e->journal, cmd->update_id, FERRY_U_VERIFIED, FERRY_U_INSTALLING,
						      st)))
			return err;
		return eng_enqueue(e, FERRY_JOB_INSTALL, cmd->update_id) ? FERRY_OK
									  : ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	default:
		return ferry_fail(st, FERRY_E_INTERNAL, "not a stage operation");
	}
}

static ferry_err deploy(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	ferry_err err;

	if ((err = admit(e, cmd, true, st)))
		return err;
	/* the links went into the journal with the update: a restart from
	 * here on goes on with the download (eng_resume); what fails now is
	 * the journal, and the update stays allowed for a cancel */
	if ((err = ferry_journal_update_move(e->journal, cmd->update_id, FERRY_U_ALLOWED, FERRY_U_DOWNLOADING, st)))
		return err;
	return eng_enqueue(e, FERRY_JOB_DOWNLOAD, cmd->update_id) ? FERRY_OK
								   : ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
}

/* The cancel is recorded in the journal first (it survives a restart, and
 * an all-or-nothing update can no longer decide to commit once it is
 * there; one that began to commit refuses it).  An update with a job
 * (queued or running) is then flagged, and the runner ends it at its next
 * safe point: it alone may touch devices.  So does an update with a device
 * in the middle of its activation.  An idle one (waiting for the cloud's
 * next command: nothing of it is on a device) is ended here. */
static ferry_err cancel(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	ferry_jupdate u;
	ferry_jstep *steps = NULL;
	size_t n = 0;
	bool activated = false;
	ferry_err err;

	if ((err = ferry_journal_update_get(e->journal, cmd->update_id, &u, st)))
		return err == FERRY_E_UNKNOWN_UPDATE ? ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", cmd->update_id)
						     : err;
	ferry_ustate state = u.state;
	ferry_jupdate_free(&u);
	if ((err = ferry_journal_cancel_request(e->journal, cmd->update_id, st)))
		return err;
	if (ferry_jobq_cancel(e->jobs, cmd->update_id) != FERRY_JOBQ_IDLE)
		return FERRY_OK;
	if ((err = ferry_journal_steps(e->journal, cmd->update_id, &steps, &n, st)))
		return err;
	for (size_t i = 0; i < n; i++)
		activated |= steps[i].stage == FERRY_S_ACTIVATING || steps[i].stage == FERRY_S_TRIAL;
	if (activated) {
		free(steps);
		if (!eng_enqueue(e, FERRY_JOB_INSTALL, cmd->update_id))
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		ferry_jobq_cancel(e->jobs, cmd->update_id);
		return FERRY_OK;
	}
	for (size_t i = 0; i < n && !err; i++) {
		if (ferry_stage_final(steps[i].stage))
			continue;
		ferry_transition t = {.update_id = cmd->update_id, .component = steps[i].component,
				      .device = steps[i].device, .stage = FERRY_S_CANCELLED, .reason = "cancelled",
				      .detail = "cancelled by command", .total = -1, .ts_ms = eng_now_ms()};
		err = eng_report(e, &t, st);
	}
	free(steps);
	if (!err) {
		ferry_jcomponent *cs;
		size_t nc;
		if (!(err = ferry_journal_components(e->journal, cmd->update_id, &cs, &nc, st))) {
			for (size_t i = 0; i < nc && !err; i++) {
				if (cs[i].link)
					err = ferry_journal_set_link(e->journal, cmd->update_id, cs[i].name, NULL, st);
				if (!err)
					err = ferry_journal_set_delta_link(e->journal, cmd->update_id, cs[i].name, NULL,
									   NULL, st);
				if (!err)
					err = ferry_journal_set_key(e->journal, cmd->update_id, cs[i].name, NULL, st);
			}
			ferry_jcomponents_free(cs, nc);
		}
	}
	return err ? err : ferry_journal_update_move(e->journal, cmd->update_id, state, FERRY_U_CANCELLED, st);
}

/* update.status: where an update stands, from the journal: its state,
 * each component's image stage and each step's.  A cloud that lost reports
 * (a crash of its own between receiving and recording them) learns from it
 * what it missed. */
static ferry_err status(ferry_engine *e, const ferry_command *cmd, json_t **out, ferry_status *st)
{
	ferry_jupdate u;
	ferry_jcomponent *cs = NULL;
	ferry_jstep *steps = NULL;
	size_t nc = 0, n = 0;
	ferry_err err;

	if ((err = ferry_journal_update_get(e->journal, cmd->update_id, &u, st)))
		return err == FERRY_E_UNKNOWN_UPDATE ? ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", cmd->update_id)
						     : err;
	json_t *o = json_pack("{s:s,s:[]}", "state", ferry_ustate_name(u.state), "components");
	ferry_jupdate_free(&u);
	if ((err = ferry_journal_components(e->journal, cmd->update_id, &cs, &nc, st)) ||
	    (err = ferry_journal_steps(e->journal, cmd->update_id, &steps, &n, st))) {
		ferry_jcomponents_free(cs, nc);
		json_decref(o);
		return err;
	}
	bool whole = o != NULL; /* an answer that leaves a step out would say it does not exist */
	for (size_t i = 0; whole && i < nc; i++) {
		json_t *c = json_pack("{s:s,s:s,s:[]}", "name", cs[i].name, "stage", ferry_stage_name(cs[i].stage), "steps");
		whole = c != NULL;
		if (c && cs[i].reason[0])
			json_object_set_new(c, "reason", json_string(cs[i].reason));
		for (size_t k = 0; c && k < n; k++) {
			if (strcmp(steps[k].component, cs[i].name))
				continue;
			json_t *s = json_pack("{s:s,s:s}", "device", steps[k].device, "stage", ferry_stage_name(steps[k].stage));
			if (s && steps[k].reason[0])
				json_object_set_new(s, "reason", json_string(steps[k].reason));
			if (s && steps[k].version[0])
				json_object_set_new(s, "version", json_string(steps[k].version));
			whole = whole && s && !json_array_append_new(json_object_get(c, "steps"), s);
		}
		whole = whole && !json_array_append_new(json_object_get(o, "components"), c);
	}
	ferry_jcomponents_free(cs, nc);
	free(steps);
	if (!whole) {
		json_decref(o);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	*out = o;
	return FERRY_OK;
}

static ferry_err dispatch(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	switch (cmd->op) {
	case FERRY_OP_UPDATE_REQUEST:
		return admit(e, cmd, false, st);
	case FERRY_OP_UPDATE_DOWNLOAD:
	case FERRY_OP_UPDATE_CHECK:
	case FERRY_OP_UPDATE_INSTALL:
		return start_stage(e, cmd, st);
	case FERRY_OP_UPDATE_DEPLOY:
		return deploy(e, cmd, st);
	case FERRY_OP_UPDATE_CANCEL:
		return cancel(e, cmd, st);
	case FERRY_OP_INVENTORY_REFRESH:
		eng_publish_inventory(e);
		return FERRY_OK;
	case FERRY_OP_UPDATE_STATUS:
		break; /* answered by eng_handle_command */
	}
	return ferry_fail(st, FERRY_E_UNSUPPORTED, "operation not handled");
}

void eng_handle_command(ferry_engine *e, const char *payload, size_t len)
{
	ferry_status st = {0};
	ferry_command cmd;
	int64_t now = eng_now();

	if (!payload) {
		ferry_fail(&st, FERRY_E_MALFORMED, "a command of %zu bytes is over the limit of %d bytes", len,
			   FERRY_JWS_MAX);
		refuse(e, NULL, &st);
		return;
	}
	len = len && payload[len - 1] == '\n' ? len - 1 : len;
	if (now < e->cfg->trust.min_time) {
		ferry_fail(&st, FERRY_E_CLOCK_UNSYNCED, "the clock reads %lld, before %lld", (long long)now,
			   (long long)e->cfg->trust.min_time);
		refuse(e, NULL, &st);
		return;
	}
	if (ferry_command_verify(payload, len, e->cmd_trust, e->cfg->gateway_id, (time_t)now,
				 e->cfg->trust.clock_skew_s, &cmd, NULL, &st)) {
		refuse(e, NULL, &st);
		return;
	}
	json_t *stat = NULL;
	if (ferry_journal_jti_use(e->journal, cmd.jti, cmd.exp + e->cfg->trust.clock_skew_s, now, &st) ||
	    (cmd.op == FERRY_OP_UPDATE_STATUS ? status(e, &cmd, &stat, &st) : dispatch(e, &cmd, &st)))
		refuse(e, &cmd, &st);
	else
		send_reply(e, &(reply){.cmd = &cmd, .status = stat});
	json_decref(stat);
	ferry_command_free(&cmd);
}
