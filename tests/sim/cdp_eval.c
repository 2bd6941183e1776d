/* A headless Chromium for the console test, driven over the DevTools
 * protocol on a pipe (--remote-debugging-pipe: Chromium reads commands on
 * fd 3 and writes answers on fd 4, each a JSON text ended by a NUL).
 *
 *   cdp_eval URL [WIDTH HEIGHT]
 *
 * opens URL in a new page, then reads lines from stdin:
 *   EXPRESSION         evaluated in the page; its value printed as one JSON
 *                      line (an exception prints {"exception": TEXT})
 *   !screenshot FILE   the page as PNG (the whole page, not the viewport)
 * and ends at the end of stdin.  The test asks the page's DOM, never waits
 * a fixed time. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static FILE *to_chrome, *from_chrome;
static int next_id = 1;

/* one message from Chromium, or NULL at its end */
static json_t *receive(void)
{
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n = getdelim(&buf, &cap, '\0', from_chrome);
	json_t *m = n > 0 ? json_loadb(buf, (size_t)n - (buf[n - 1] == 0), 0, NULL) : NULL;
	free(buf);
	return m;
}

/* send a command and wait for its answer (events in between are dropped) */
static json_t *call(const char *session, const char *method, json_t *params)
{
	int id = next_id++;
	json_t *cmd = json_pack("{s:i,s:s,s:o}", "id", id, "method", method, "params", params ? params : json_object());
	if (session)
		json_object_set_new(cmd, "sessionId", json_string(session));
	char *text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	fwrite(text, 1, strlen(text) + 1, to_chrome); /* with its NUL */
	fflush(to_chrome);
	free(text);
	for (;;) {
		json_t *m = receive();
		if (!m) {
			fprintf(stderr, "cdp_eval: Chromium went away during %s\n", method);
			exit(1);
		}
		if (json_integer_value(json_object_get(m, "id")) == id) {
			if (json_object_get(m, "error")) {
				char *e = json_dumps(json_object_get(m, "error"), JSON_COMPACT);
				fprintf(stderr, "cdp_eval: %s: %s\n", method, e);
				exit(1);
			}
			json_t *r = json_incref(json_object_get(m, "result"));
			json_decref(m);
			return r;
		}
		json_decref(m);
	}
}

static void screenshot(const char *session, const char *file)
{
	json_t *r = call(session, "Page.captureScreenshot", json_pack("{s:s,s:b}", "format", "png",
								      "captureBeyondViewport", 1));
	const char *b64 = json_string_value(json_object_get(r, "data"));
	size_t n = b64 ? strlen(b64) : 0;
	unsigned char *png = malloc(n + 3);
	int len = b64 ? EVP_DecodeBlock(png, (const unsigned char *)b64, (int)n) : -1;
	/* EVP_DecodeBlock counts the padding as bytes */
	while (len > 0 && n && b64[n - 1] == '=') {
		len--;
		n--;
	}
	FILE *f = len > 0 ? fopen(file, "wb") : NULL;
	if (!f || fwrite(png, 1, (size_t)len, f) != (size_t)len || fclose(f)) {
		fprintf(stderr, "cdp_eval: cannot write %s\n", file);
		exit(1);
	}
	free(png);
	json_decref(r);
	puts("\"ok\"");
}

int main(int argc, char **argv)
{
	int cmd_pipe[2], out_pipe[2];
	char dir[] = "/tmp/ferry-cdp-XXXXXX";

	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: cdp_eval URL [WIDTH HEIGHT]\n");
		return 2;
	}
	if (!mkdtemp(dir) || pipe(cmd_pipe) || pipe(out_pipe)) {
		perror("cdp_eval");
		return 1;
	}
	char profile[64];
	snprintf(profile, sizeof(profile), "--user-data-dir=%s", dir);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* it goes when we go, however we go */
		/* Chromium reads fd 3 and writes fd 4 */
		int in = dup(cmd_pipe[0]), out = dup(out_pipe[1]);
		dup2(in, 3);
		dup2(out, 4);
		int devnull = open("/dev/null", 1);
		dup2(devnull, 2); /* its own chatter (no D-Bus, no GPU) */
		execlp("chromium", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		       "--disable-dev-shm-usage", "--remote-debugging-pipe", profile, "about:blank", (char *)NULL);
		_exit(127);
	}
	close(cmd_pipe[0]);
	close(out_pipe[1]);
	signal(SIGPIPE, SIG_IGN);
	to_chrome = fdopen(cmd_pipe[1], "w");
	from_chrome = fdopen(out_pipe[0], "r");

	json_t *r = call(NULL, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"));
	char target[128];
	snprintf(target, sizeof(target), "%s", json_string_value(json_object_get(r, "targetId")));
	json_decref(r);
	r = call(NULL, "Target.attachToTarget", json_pack("{s:s,s:b}", "targetId", target, "flatten", 1));
	char session[128];
	snprintf(session, sizeof(session), "%s", json_string_value(json_object_get(r, "sessionId")));
	json_decref(r);
	if (argc == 4)
		json_decref(call(session, "Emulation.setDeviceMetricsOverride",
				 json_pack("{s:i,s:i,s:i,s:b}", "width", atoi(argv[2]), "height", atoi(argv[3]),
					   "deviceScaleFactor", 1, "mobile", 0)));
	json_decref(call(session, "Page.navigate", json_pack("{s:s}", "url", argv[1])));
	puts("\"ready\"");
	fflush(stdout);

	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = 0;
		if (!strncmp(line, "!screenshot ", 12)) {
			screenshot(session, line + 12);
		} else {
			r = call(session, "Runtime.evaluate", json_pack("{s:s,s:b}", "expression", line, "returnByValue", 1));
			json_t *ex = json_object_get(r, "exceptionDetails");
			json_t *out = ex ? json_pack("{s:O}", "exception", json_object_get(json_object_get(ex, "exception"),
											  "description"))
					 : json_incref(json_object_get(json_object_get(r, "result"), "value"));
			char *text = out ? json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
			puts(text);
			free(text);
			json_decref(out);
			json_decref(r);
		}
		fflush(stdout);
	}
	free(line);
	fclose(to_chrome);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	char rm[96];
	snprintf(rm, sizeof(rm), "rm -rf %s", dir);
	return system(rm) ? 1 : 0;
}
