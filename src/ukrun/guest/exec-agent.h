/* What ukrun's exec agent's two files share (exec-agent.c: the ports and the sessions' I/O; exec-start.c:
 * starting a session's process). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define PREFIX "io.ukrun.exec."
#define MAX_PORTS 16
#define MAX_START (1 << 20) /* a START frame: the environment of a Kubernetes pod can be large */
#define MAX_DATA 32768      /* any other frame, either way */
#define HIGH (256 * 1024)   /* a buffer this full stops reading from its source */
#define MAX_GROUPS 64
#define HEADER 5            /* type (1 byte), payload length (4 bytes, big-endian) */
#define START_FIXED 44

struct buf {
	char *p;
	size_t len, cap;
};

struct server {
	int port, sfd, connected;
	struct buf in, out; /* from the host, to the host */
	pid_t pid;          /* the session's process; 0: none */
	int tty, fd_in, fd_out, fd_err, stdin_eof;
	struct buf to_child;
	unsigned char nonce[8];
};

void put(struct buf *b, const void *data, size_t n);
uint32_t be32(const unsigned char *p);
void frame(struct server *s, char type, const void *a, size_t na, const void *b, size_t nb);
void closefd(int *fd);
void end_session(struct server *s);
void start_session(struct server *s, unsigned char *p, size_t n);
