/* ukrun's exec agent: runs `exec` processes inside a Linux guest started with ukrun's init contract.
 *
 * ukrun gives the VM a few virtio-serial ports named io.ukrun.exec.<i> (qemu serves each on a Unix socket
 * in the container's state folder) and puts ukrun.exec=<count> on the kernel command line; the guest's
 * init starts this program with that count once the root is mounted. One server process per port runs
 * one session at a time: the host sends a START frame (the process: arguments, environment, working
 * folder, user, groups, terminal), the server forks the process with pipes or a pseudo-terminal, answers
 * STARTED (its PID) or FAILED (why), relays stdin, stdout and stderr, delivers signals and window sizes,
 * and reports how the process ended. The wire format is ukrun/execwire.py's.
 *
 * What must stay true: the host end going away (the exec's host process killed, the exec abandoned) kills
 * the session's whole process group; a server never blocks on one stream while another waits (all I/O is
 * non-blocking, with bounded buffers that stop reading their source when full); a server waits for the
 * host to connect without spinning (virtio-serial raises SIGIO when the host end opens or closes, and a
 * read returns 0 while nobody is connected).
 *
 * exec-start.c starts a session's process. Built statically (scripts/setup, musl) and put in images at
 * /.ukrun/exec-agent by `ukrun build`.
 */
#include "exec-agent.h"

void put(struct buf *b, const void *data, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			_exit(111);
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void drop(struct buf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void frame(struct server *s, char type, const void *a, size_t na, const void *b, size_t nb)
{
	unsigned char h[HEADER] = {(unsigned char)type};
	uint32_t n = (uint32_t)(na + nb);
	h[1] = n >> 24, h[2] = n >> 16, h[3] = n >> 8, h[4] = n;
	put(&s->out, h, HEADER);
	put(&s->out, a, na);
	put(&s->out, b, nb);
}

void closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The session ends: its process group is killed if it still runs (reaped later, on SIGCHLD). */
void end_session(struct server *s)
{
	if (s->pid > 0) {
		kill(-s->pid, SIGKILL);
		kill(s->pid, SIGKILL);
	}
	s->pid = 0;
	closefd(&s->fd_in);
	closefd(&s->fd_out);
	closefd(&s->fd_err);
	s->to_child.len = 0;
	s->stdin_eof = 0;
}

/* Reads what a stream holds now into the outgoing buffer as `type` frames, up to the buffer's high mark
 * when `bounded`; closes it at its end. */
static void pump(struct server *s, int *fd, char type, int bounded)
{
	char data[MAX_DATA];
	for (;;) {
		ssize_t n = read(*fd, data, sizeof data);
		if (n > 0) {
			frame(s, type, data, (size_t)n, NULL, 0);
			if (bounded && s->out.len >= HIGH)
				return;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		closefd(fd); /* end of file, or EIO: a terminal whose other side closed */
		return;
	}
}

static void reap(struct server *s)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != s->pid)
			continue; /* a session killed earlier */
		if (s->fd_out >= 0)
			pump(s, &s->fd_out, 'O', 0);
		if (s->fd_err >= 0)
			pump(s, &s->fd_err, 'R', 0);
		unsigned char x[5] = {WIFSIGNALED(status) ? 1 : 0};
		uint32_t v = WIFSIGNALED(status) ? (uint32_t)WTERMSIG(status) : (uint32_t)WEXITSTATUS(status);
		x[1] = v >> 24, x[2] = v >> 16, x[3] = v >> 8, x[4] = v;
		frame(s, 'X', x, sizeof x, NULL, 0);
		s->pid = 0;
		end_session(s);
	}
}

static void handle(struct server *s, char type, unsigned char *p, uint32_t n)
{
	if (type == 'S') {
		start_session(s, p, n);
	} else if (s->pid <= 0) {
		return; /* what a session that ended left in flight */
	} else if (type == 'I' && s->fd_in >= 0 && !s->stdin_eof) {
		put(&s->to_child, p, n);
	} else if (type == 'E' && !s->tty) {
		s->stdin_eof = 1;
	} else if (type == 'K' && n == 4) {
		kill(s->pid, (int)be32(p));
	} else if (type == 'W' && n == 4 && s->tty) {
		struct winsize ws = {.ws_row = (unsigned short)(p[0] << 8 | p[1]),
				     .ws_col = (unsigned short)(p[2] << 8 | p[3])};
		ioctl(s->fd_out, TIOCSWINSZ, &ws);
	}
}

static void from_host(struct server *s)
{
	char data[MAX_DATA];
	ssize_t n = read(s->port, data, sizeof data);
	if (n < 0)
		return; /* EAGAIN, EINTR */
	if (n == 0) { /* nobody at the host end: wait for SIGIO */
		s->connected = 0;
		end_session(s);
		s->in.len = s->out.len = 0;
		return;
	}
	put(&s->in, data, (size_t)n);
	while (s->in.len >= HEADER) {
		unsigned char *h = (unsigned char *)s->in.p;
		uint32_t len = be32(h + 1);
		if (len > (h[0] == 'S' ? MAX_START : MAX_DATA)) {
			s->in.len = 0; /* not ukrun's framing: drop it, as the host will on its side */
			return;
		}
		if (s->in.len < HEADER + (size_t)len)
			return;
		handle(s, (char)h[0], h + HEADER, len);
		drop(&s->in, HEADER + len);
	}
}

static void serve(const char *dev)
{
	struct server s = {.fd_in = -1, .fd_out = -1, .fd_err = -1, .connected = 1};
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGIO);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	s.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	s.port = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (s.sfd < 0 || s.port < 0 || fcntl(s.port, F_SETOWN, getpid()) ||
	    fcntl(s.port, F_SETFL, O_RDWR | O_NONBLOCK | O_ASYNC)) {
		fprintf(stderr, "ukrun exec agent: cannot serve %s: %s\n", dev, strerror(errno));
		_exit(1);
	}
	for (;;) {
		struct pollfd p[5] = {{s.sfd, POLLIN, 0}};
		int n = 1, ip = -1, io = -1, ie = -1, ii = -1;
		if (s.connected)
			ip = n, p[n++] = (struct pollfd){s.port, (short)(POLLIN | (s.out.len ? POLLOUT : 0)), 0};
		if (s.fd_out >= 0 && s.out.len < HIGH)
			io = n, p[n++] = (struct pollfd){s.fd_out, POLLIN, 0};
		if (s.fd_err >= 0 && s.out.len < HIGH)
			ie = n, p[n++] = (struct pollfd){s.fd_err, POLLIN, 0};
		if (s.fd_in >= 0 && (s.to_child.len || s.stdin_eof))
			ii = n, p[n++] = (struct pollfd){s.fd_in, POLLOUT, 0};
		if (poll(p, (nfds_t)n, -1) < 0)
			continue;
		if (p[0].revents) {
			struct signalfd_siginfo si;
			while (read(s.sfd, &si, sizeof si) == sizeof si)
				if (si.ssi_signo == SIGIO)
					s.connected = 1;
			reap(&s);
		}
		if (ip >= 0 && p[ip].revents & POLLOUT && s.out.len) {
			ssize_t w = write(s.port, s.out.p, s.out.len < MAX_DATA ? s.out.len : MAX_DATA);
			if (w > 0)
				drop(&s.out, (size_t)w);
		}
		if (ip >= 0 && p[ip].revents & (POLLIN | POLLHUP | POLLERR))
			from_host(&s);
		if (io >= 0 && p[io].revents && s.fd_out >= 0)
			pump(&s, &s.fd_out, 'O', 1);
		if (ie >= 0 && p[ie].revents && s.fd_err >= 0)
			pump(&s, &s.fd_err, 'R', 1);
		if (ii >= 0 && s.fd_in >= 0 && p[ii].revents) {
			ssize_t w = s.to_child.len ? write(s.fd_in, s.to_child.p, s.to_child.len) : 0;
			if (w > 0)
				drop(&s.to_child, (size_t)w);
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				s.to_child.len = 0, closefd(&s.fd_in); /* the process closed its stdin */
			if (s.fd_in >= 0 && !s.to_child.len && s.stdin_eof)
				closefd(&s.fd_in);
		}
	}
}

/* The ports named io.ukrun.exec.<i>, as /dev/<vportNpM>; waits up to 10 s for `want` of them to appear. */
static int find_ports(int want, char devs[MAX_PORTS][64])
{
	int found = 0;
	for (int tries = 0; tries < 200 && found < want; tries++) {
		if (tries)
			usleep(50000);
		found = 0;
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d && (e = readdir(d)) && found < MAX_PORTS) {
			char path[300], name[64] = "";
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
			FILE *f = fopen(path, "re");
			if (!f)
				continue;
			if (fgets(name, sizeof name, f) && strncmp(name, PREFIX, strlen(PREFIX)) == 0)
				snprintf(devs[found++], 64, "/dev/%.58s", e->d_name);
			fclose(f);
		}
		if (d)
			closedir(d);
	}
	return found;
}

int main(int argc, char **argv)
{
	char devs[MAX_PORTS][64];
	int want = argc > 1 ? atoi(argv[1]) : 1;
	signal(SIGPIPE, SIG_IGN);
	int found = find_ports(want < 1 ? 1 : want > MAX_PORTS ? MAX_PORTS : want, devs);
	if (!found) {
		fprintf(stderr, "ukrun exec agent: no virtio-serial port named %s*: is virtio_console loaded?\n", PREFIX);
		return 1;
	}
	for (int i = 0; i < found; i++)
		if (fork() == 0)
			serve(devs[i]);
	while (wait(NULL) > 0)
		;
	return 0;
}
