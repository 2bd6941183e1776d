/* systemd's readiness message reaches the socket systemd names, through
 * the real libsystemd loaded for the call; without $NOTIFY_SOCKET nothing
 * is sent, and a socket that is not there is a failure, not a hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "notify.h"

static void test_ready_reaches_systemd(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char buf[64];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	(void)state;

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/ferry-notify-%d", (int)getpid());
	unlink(sa.sun_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

	unsetenv("NOTIFY_SOCKET");
	assert_true(ferry_notify("READY=1")); /* not under systemd: nothing to send */
	assert_true(recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0);

	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	assert_true(ferry_notify("READY=1"));
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1");
	assert_true(ferry_notify("STOPPING=1"));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "STOPPING=1");

	setenv("NOTIFY_SOCKET", "/tmp/ferry-notify-nobody-listens", 1);
	assert_false(ferry_notify("READY=1"));
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(sa.sun_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ready_reaches_systemd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
