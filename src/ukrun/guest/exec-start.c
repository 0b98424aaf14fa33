/* Starting an exec session's process in the guest (see exec-agent.c): the START frame parsed, the process
 * forked with pipes or a pseudo-terminal, in its own session, as its user, in its folder, with its
 * environment; STARTED with its PID, or FAILED with why, goes back to the host. */
#include "exec-agent.h"

extern char **environ;

static void fail_child(int errfd, const char *fmt, const char *what, int err)
{
	char msg[512];
	int n = snprintf(msg, sizeof msg, fmt, what, strerror(err));
	if (write(errfd, msg, n > 0 && (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) < 0)
		_exit(126);
	_exit(127);
}

struct start {
	uint32_t uid, gid, umask, flags, ngroups, nargs, nenv;
	uint16_t rows, cols;
	gid_t groups[MAX_GROUPS];
	char *cwd, **argv, **envp;
};

/* Parses a START payload (see execwire.py): the string table it returns (to free) holds the working
 * folder, then `argv` and `envp`, which point into `p`; NULL when the payload is malformed. */
static char **parse_start(struct server *s, unsigned char *p, size_t n, struct start *st)
{
	if (n < START_FIXED || memcmp(p, "UKX1", 4) != 0)
		return NULL;
	memcpy(s->nonce, p + 4, 8);
	st->uid = be32(p + 12), st->gid = be32(p + 16), st->umask = be32(p + 20), st->flags = be32(p + 24);
	st->rows = (uint16_t)(p[28] << 8 | p[29]), st->cols = (uint16_t)(p[30] << 8 | p[31]);
	st->ngroups = be32(p + 32), st->nargs = be32(p + 36), st->nenv = be32(p + 40);
	if (st->ngroups > MAX_GROUPS || st->nargs < 1 || st->nargs > 65536 || st->nenv > 65536)
		return NULL;
	size_t off = START_FIXED;
	if (n - off < (size_t)st->ngroups * 4)
		return NULL;
	for (uint32_t i = 0; i < st->ngroups; i++, off += 4)
		st->groups[i] = be32(p + off);
	/* v: cwd, the arguments, NULL, the environment, NULL */
	char **v = calloc(st->nargs + st->nenv + 3, sizeof *v);
	if (!v)
		_exit(111);
	for (size_t i = 0; i < 1 + st->nargs + st->nenv; i++) {
		char *end = off < n ? memchr(p + off, 0, n - off) : NULL;
		if (!end) {
			free(v);
			return NULL;
		}
		v[i > st->nargs ? i + 1 : i] = (char *)p + off;
		off = (size_t)(end - (char *)p) + 1;
	}
	if (off != n) {
		free(v);
		return NULL;
	}
	st->cwd = v[0];
	st->argv = v + 1;
	st->envp = v + 2 + st->nargs;
	return v;
}

void start_session(struct server *s, unsigned char *p, size_t n)
{
	struct start st;
	end_session(s);
	char **table = parse_start(s, p, n, &st);
	if (!table) {
		const char *msg = "the guest's exec agent got a malformed request";
		frame(s, 'F', s->nonce, 8, msg, strlen(msg));
		return;
	}
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, master = -1, slave = -1, errp[2];
	s->tty = st.flags & 1;
	if (s->tty) {
		struct winsize ws = {.ws_row = st.rows, .ws_col = st.cols};
		if (openpty(&master, &slave, NULL, NULL, st.rows && st.cols ? &ws : NULL) < 0) {
			char msg[256];
			int m = snprintf(msg, sizeof msg, "cannot open a terminal in the guest (%s): its init must mount "
				"devpts at /dev/pts", strerror(errno));
			frame(s, 'F', s->nonce, 8, msg, (size_t)m);
			free(table);
			return;
		}
	} else if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
		_exit(111);
	}
	if (pipe2(errp, O_CLOEXEC))
		_exit(111);
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		if (s->tty) {
			ioctl(slave, TIOCSCTTY, 0);
			dup2(slave, 0), dup2(slave, 1), dup2(slave, 2);
			if (slave > 2)
				close(slave);
			close(master);
		} else {
			dup2(in[0], 0), dup2(out[1], 1), dup2(err[1], 2);
		}
		if (st.umask != 0xFFFFFFFFu)
			umask(st.umask & 0777);
		if (setgroups(st.ngroups, st.groups) || setgid(st.gid) || setuid(st.uid)) {
			char user[32];
			snprintf(user, sizeof user, "%u:%u", st.uid, st.gid);
			fail_child(errp[1], "cannot switch to user %s in the guest: %s", user, errno);
		}
		if (chdir(st.cwd))
			fail_child(errp[1], "cannot enter the working folder %s in the guest: %s", st.cwd, errno);
		environ = st.envp;
		execvp(st.argv[0], st.argv);
		fail_child(errp[1], "cannot run %s in the guest: %s", st.argv[0], errno);
	}
	close(errp[1]);
	if (s->tty) {
		close(slave);
		s->fd_out = master;
		s->fd_in = fcntl(master, F_DUPFD_CLOEXEC, 3);
		fcntl(master, F_SETFD, FD_CLOEXEC);
	} else {
		close(in[0]), close(out[1]), close(err[1]);
		s->fd_in = in[1], s->fd_out = out[0], s->fd_err = err[0];
	}
	free(table);
	char msg[512];
	ssize_t m, got = 0;
	while ((m = read(errp[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0 || (m < 0 && errno == EINTR))
		got += m > 0 ? m : 0;
	close(errp[0]);
	if (pid < 0 || got > 0) {
		if (pid < 0)
			got = snprintf(msg, sizeof msg, "cannot fork in the guest: %s", strerror(errno));
		frame(s, 'F', s->nonce, 8, msg, (size_t)got);
		end_session(s); /* the child exited 127; reaped on SIGCHLD */
		return;
	}
	fcntl(s->fd_in, F_SETFL, O_NONBLOCK);
	fcntl(s->fd_out, F_SETFL, O_NONBLOCK);
	if (s->fd_err >= 0)
		fcntl(s->fd_err, F_SETFL, O_NONBLOCK);
	s->pid = pid;
	unsigned char v[4] = {(unsigned char)(pid >> 24), (unsigned char)(pid >> 16), (unsigned char)(pid >> 8),
			      (unsigned char)pid};
	frame(s, 'P', s->nonce, 8, v, 4);
}

