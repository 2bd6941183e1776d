/* Commands: what each operation checks before anything changes, and what it
 * starts.  Every command gets exactly one reply.  Refusals change nothing but
 * the replay store (a refused command's jti is still spent). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "ferry/jws.h"
#include "log.h"

typedef struct reply {
	const ferry_command *cmd; /* NULL when the command did not verify */
	ferry_err code;
	const char *detail;
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
	json_object_set_new(j, "ts", json_integer(eng_now()));
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	ferry_log(r->code ? LOG_WARNING : LOG_INFO, "%s %s: %s%s%s", r->cmd ? ferry_op_name(r->cmd->op) : "command",
		  r->cmd ? r->cmd->update_id : "", r->code ? ferry_err_code(r->code) : "accepted",
		  r->code ? ": " : "", r->code && r->detail ? r->detail : "");
	if (body && e->cloud && ferry_cloud_publish(e->cloud, "reply", body, false, NULL, &st))
		ferry_log(LOG_WARNING, "reply not published: %s", st.detail);
	free(body);
}

static void refuse(ferry_engine *e, const ferry_command *c, const ferry_status *st)
{
	send_reply(e, &(reply){.cmd = c, .code = st->code, .detail = st->detail});
}

ferry_err eng_load_manifest(ferry_engine *e, const ferry_jupdate *u, ferry_manifest *m, ferry_status *st)
{
	return ferry_manifest_verify(u->manifest, strlen(u->manifest), e->manifest_trust, eng_now(),
				     e->cfg->trust.clock_skew_s, m, NULL, st);
}

/* What can stop a component before any byte moves. */
static ferry_err check_component(ferry_engine *e, const ferry_manifest *m, const ferry_component *c,
				 bool *already, ferry_status *st)
{
	ferry_adapter *ad = ferry_adapters_find(e->adapters, c->adapter);
	const char *running;
	ferry_semver cur;

	*already = false;
	if (!ad)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: no adapter \"%s\" on this gateway", c->name, c->adapter);
	if (!ferry_adapter_takes_format(ad, ferry_format_name(c->format)))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: adapter %s does not take format %s", c->name,
				  c->adapter, ferry_format_name(c->format));
	if (c->has_delta || c->encryption)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: %s images are not supported yet", c->name,
				  c->has_delta ? "delta" : "encrypted");
	if (!ferry_adapters_match(e->adapters, ad, c))
		return ferry_fail(st, FERRY_E_NO_MATCHING_DEVICE, "%s: no %s device with vendor %s, class %s%s", c->name,
				  c->adapter, c->vendor_id, c->class_id, c->n_match ? " and the given match" : "");
	running = ferry_adapters_version(e->adapters, c->name);
	/* A device that cannot tell its version is held to the last one ferry
	 * installed: anti-rollback survives a device that forgets. */
	char recorded[65];
	bool found = false;
	if (!running && ferry_journal_installed(e->journal, c->name, recorded, &found, NULL) == FERRY_OK && found)
		running = recorded;
	if (running && ferry_semver_parse(running, &cur, NULL) == FERRY_OK) {
		int cmp = ferry_semver_cmp(&c->version, &cur);
		if (cmp < 0 && !m->allow_downgrade)
			return ferry_fail(st, FERRY_E_DOWNGRADE, "%s: %s is older than installed %s", c->name,
					  c->version.text, cur.text);
		*already = cmp == 0;
	}
	return FERRY_OK;
}

/* Bytes still to fetch: components not installed already and not in the store. */
static int64_t bytes_needed(ferry_engine *e, const ferry_manifest *m, const bool *already)
{
	char path[FERRY_PATH_MAX];
	int64_t sum = 0;

	for (size_t i = 0; i < m->n; i++)
		if (!already[i] && !ferry_store_has(e->store, m->c[i].sha256, path))
			sum += m->c[i].size;
	return sum;
}

/* update.request and the first half of update.deploy. */
static ferry_err admit(ferry_engine *e, const ferry_command *cmd, bool deploy, ferry_status *st)
{
	ferry_manifest m;
	ferry_jupdate u = {0}, old;
	bool already[FERRY_COMPONENTS_MAX] = {false};
	const char *names[FERRY_COMPONENTS_MAX];
	ferry_err err;
	int64_t need, avail;

	if (ferry_journal_update_get(e->journal, cmd->update_id, &old, NULL) == FERRY_OK) {
		err = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s exists already (%s)", cmd->update_id,
				 ferry_ustate_name(old.state));
		ferry_jupdate_free(&old);
		return err;
	}
	if ((err = ferry_manifest_verify(cmd->manifest, strlen(cmd->manifest), e->manifest_trust, eng_now(),
					 e->cfg->trust.clock_skew_s, &m, NULL, st)))
		return err;
	if (m.sequence <= ferry_journal_last_sequence(e->journal)) {
		err = ferry_fail(st, FERRY_E_STALE_SEQUENCE, "manifest sequence %lld is not above %lld",
				 (long long)m.sequence, (long long)ferry_journal_last_sequence(e->journal));
		goto out;
	}
	pthread_mutex_lock(&e->adapters_lock);
	ferry_adapters_discover(e->adapters);
	for (size_t i = 0; i < m.n && !err; i++)
		err = check_component(e, &m, &m.c[m.order[i]], &already[m.order[i]], st);
	pthread_mutex_unlock(&e->adapters_lock);
	if (err)
		goto out;
	need = bytes_needed(e, &m, already);
	avail = ferry_store_free(e->store);
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
	u.created = eng_now();
	for (size_t i = 0; i < m.n; i++)
		names[i] = m.c[m.order[i]].name;
	if ((err = ferry_journal_update_add(e->journal, &u, names, m.n, st)) ||
	    (err = ferry_journal_set_sequence(e->journal, m.sequence, st)))
		goto out;
	for (size_t i = 0; i < m.n && !err; i++) {
		const ferry_component *c = &m.c[m.order[i]];
		ferry_transition t = {.update_id = u.id, .component = c->name, .total = -1, .ts = eng_now(),
				      .stage = already[m.order[i]] ? "already_installed" : "allowed",
				      .version = already[m.order[i]] ? c->version.text : NULL};
		err = eng_report(e, &t, st);
	}
out:
	ferry_manifest_free(&m);
	return err;
}

static ferry_err need_state(ferry_engine *e, const ferry_command *cmd, const ferry_ustate *ok, size_t n,
			    ferry_jupdate *u, ferry_status *st)
{
	ferry_err err = ferry_journal_update_get(e->journal, cmd->update_id, u, st);

	if (err)
		return ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", cmd->update_id);
	for (size_t i = 0; i < n; i++)
		if (u->state == ok[i])
			return FERRY_OK;
	err = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s is %s", u->id, ferry_ustate_name(u->state));
	ferry_jupdate_free(u);
	return err;
}

/* Links for every component that still needs bytes; they are secrets kept
 * in the journal only until used. */
static ferry_err store_links(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	ferry_jcomponent *cs;
	size_t n;
	ferry_err err = ferry_journal_components(e->journal, cmd->update_id, &cs, &n, st);

	if (err)
		return err;
	for (size_t i = 0; !err && i < n; i++) {
		const char *url = NULL;
		if (!strcmp(cs[i].stage, "already_installed") || !strcmp(cs[i].stage, "downloaded"))
			continue;
		for (size_t k = 0; k < cmd->n_links; k++)
			if (!strcmp(cmd->links[k].component, cs[i].name))
				url = cmd->links[k].url;
		if (!url)
			err = ferry_fail(st, FERRY_E_MALFORMED, "links: no link for component %s", cs[i].name);
		else
			err = ferry_journal_set_link(e->journal, cmd->update_id, cs[i].name, url, st);
	}
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
		ferry_jupdate_free(&u);
		if ((err = store_links(e, cmd, st)) ||
		    (err = ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_DOWNLOADING, st)))
			return err;
		eng_enqueue(e, JOB_DOWNLOAD, cmd->update_id);
		return FERRY_OK;
	case FERRY_OP_UPDATE_CHECK:
		if ((err = need_state(e, cmd, for_check, 1, &u, st)))
			return err;
		ferry_jupdate_free(&u);
		if ((err = ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_VERIFYING, st)))
			return err;
		eng_enqueue(e, JOB_CHECK, cmd->update_id);
		return FERRY_OK;
	case FERRY_OP_UPDATE_INSTALL:
		if ((err = need_state(e, cmd, for_install, 1, &u, st)))
			return err;
		ferry_jupdate_free(&u);
		if ((err = ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_INSTALLING, st)))
			return err;
		eng_enqueue(e, JOB_INSTALL, cmd->update_id);
		return FERRY_OK;
	default:
		return ferry_fail(st, FERRY_E_INTERNAL, "not a stage operation");
	}
}

static ferry_err deploy(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	ferry_err err;

	if ((err = admit(e, cmd, true, st)))
		return err;
	if ((err = store_links(e, cmd, st)) ||
	    (err = ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_DOWNLOADING, st))) {
		/* admitted but cannot go on: close it so that nothing waits forever */
		if (ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_FAILED, NULL))
			ferry_log(LOG_ERR, "journal: cannot close update %s", cmd->update_id);
		return err;
	}
	eng_enqueue(e, JOB_DOWNLOAD, cmd->update_id);
	return FERRY_OK;
}

/* Idle updates are cancelled here; a running one is flagged and the worker
 * cancels it at its next safe point. */
static ferry_err cancel(ferry_engine *e, const ferry_command *cmd, ferry_status *st)
{
	ferry_jupdate u;
	ferry_jcomponent *cs;
	size_t n;
	bool running;
	ferry_err err;

	if (ferry_journal_update_get(e->journal, cmd->update_id, &u, st))
		return ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", cmd->update_id);
	bool final = ferry_ustate_final(u.state);
	ferry_jupdate_free(&u);
	if (final)
		return ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s has ended", cmd->update_id);
	pthread_mutex_lock(&e->job_lock);
	running = !strcmp(e->running, cmd->update_id);
	if (running)
		atomic_store(&e->cancel, true);
	/* a queued job for it will find it cancelled and do nothing */
	pthread_mutex_unlock(&e->job_lock);
	if (running)
		return FERRY_OK;
	if ((err = ferry_journal_components(e->journal, cmd->update_id, &cs, &n, st)))
		return err;
	for (size_t i = 0; i < n && !err; i++) {
		if (!strcmp(cs[i].stage, "installed") || !strcmp(cs[i].stage, "already_installed"))
			continue;
		ferry_transition t = {.update_id = cmd->update_id, .component = cs[i].name, .stage = "cancelled",
				      .reason = "cancelled", .detail = "cancelled by command", .total = -1,
				      .ts = eng_now()};
		err = eng_report(e, &t, st);
		if (!err)
			err = ferry_journal_set_link(e->journal, cmd->update_id, cs[i].name, NULL, st);
	}
	ferry_jcomponents_free(cs, n);
	return err ? err : ferry_journal_update_state(e->journal, cmd->update_id, FERRY_U_CANCELLED, st);
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
	}
	return ferry_fail(st, FERRY_E_UNSUPPORTED, "operation not handled");
}

void eng_handle_command(ferry_engine *e, const char *payload, size_t len)
{
	ferry_status st = {0};
	ferry_command cmd;
	int64_t now = eng_now();

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
	if (ferry_journal_jti_use(e->journal, cmd.jti, cmd.exp + e->cfg->trust.clock_skew_s, now, &st) ||
	    dispatch(e, &cmd, &st))
		refuse(e, &cmd, &st);
	else
		send_reply(e, &(reply){.cmd = &cmd});
	ferry_command_free(&cmd);
}
