/*
 * ukrun's compiled front: the binary the shim runs for every verb, when scripts/setup could build it.
 *
 * Why: the shim starts its runtime for each of create, start, delete and its own forced delete, and an
 * interpreter takes longer to start than a container's whole call takes in urunc's Go binary. With a resident
 * helper (ukrun.helper) answering, this front relays create, delete, state, start and kill to it as ukrun.relay
 * does, in the same protocol, and runs no interpreter for them; and it answers the shim's forced delete of a
 * container that is gone as ukrun.fast.gone does. Everything else, and everything when no helper answers or the
 * helper refuses a call, is exec'ed into the interpreter on ukrun.fast, as the Python launcher runs it, with the
 * same arguments: the behaviour is ukrun's, this file only carries calls.
 *
 * What must stay true:
 *   - it decides nothing about containers: the worker parses the arguments again and refuses what the shim's
 *     ukrun would not take, and any reply it does not recognise (an older helper's refusal) means "run it in
 *     Python";
 *   - as in ukrun.relay, what must be the shim's descendant is made here: the zygote (the container's
 *     init-to-be) is forked before the request, and execs the interpreter on ukrun.launcher.main while the
 *     worker works; a container that is not a unikernel is exec'ed into runc by this process;
 *   - once the request is sent there is no falling back: a worker that dies is a failed verb;
 *   - texts go as the kernel gave them (bytes), whole: a working folder longer than the buffer for it, or a
 *     reply too large, is a call for Python (or, once sent, a failed one), never a text cut short.
 *
 * Built by scripts/setup with UKRUN_PYTHON (the interpreter) and UKRUN_SRC (the folder holding the ukrun
 * package) defined.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(UKRUN_PYTHON) || !defined(UKRUN_SRC)
#error "define UKRUN_PYTHON and UKRUN_SRC (scripts/setup does)"
#endif

extern char **environ;

enum { VERSION = 3, FIELDS = 10 };
static const char DEFAULT_SOCKET[] = "/run/ukrun/helper.sock";
static const char DEFAULT_ROOT[] = "/run/ukrun/runtime";
static const char ZYGOTE[] = "import sys\nsys.path.insert(0, sys.argv[1])\n"
                             "from ukrun.launcher import main\nmain(sys.argv[2:])\n";
static const char LAUNCH[] = "import sys\nsys.path.insert(0, sys.argv.pop(1))\nsys.argv[0] = sys.argv.pop(1)\n"
                             "from ukrun.fast import main\nmain()\n";
static const char *const VALUED[] = {"--root", "--log", "--log-format", "--criu", "--rootless", NULL};
static const char *const SWITCHES[] = {"--debug", "--systemd-cgroup", NULL};
static const char *const RELAYED[] = {"create", "delete", "state", "start", "kill", NULL};

/* The shim's ukrun in Python, with this call's arguments, and this file as its sys.argv[0]: ukrun never takes
 * the file the shim ran for runc (a node may install ukrun as `runc`; see ukrun.runtime.verbs.exec_runc). */
static _Noreturn void python(int argc, char **argv)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char **args = malloc(((size_t)argc + 6) * sizeof *args);
    if (n > 0 && args) {
        self[n] = 0;
        const char *head[6] = {UKRUN_PYTHON, "-IS", "-c", LAUNCH, UKRUN_SRC, self};
        memcpy(args, head, sizeof head);
        memcpy(args + 6, argv + 1, (size_t)argc * sizeof *args); /* argv[argc] is NULL */
        execv(UKRUN_PYTHON, args);
    }
    fprintf(stderr, "ukrun: cannot run %s: %s; run scripts/setup again\n", UKRUN_PYTHON, strerror(errno));
    _exit(1);
}

static int one_of(const char *word, size_t n, const char *const *set)
{
    for (; *set; set++)
        if (strlen(*set) == n && strncmp(word, *set, n) == 0)
            return 1;
    return 0;
}

/* The global flags as ukrun.fast parses them: the index of the verb, or 0 when they are not all known ones. */
static int globals(int argc, char **argv, const char **root)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *flag = argv[i], *eq = strchr(flag, '=');
        size_t n = eq ? (size_t)(eq - flag) : strlen(flag);
        if (one_of(flag, n, VALUED)) {
            const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value)
                return 0;
            if (n == 6 && strncmp(flag, "--root", 6) == 0)
                *root = value;
        } else if (eq || !one_of(flag, n, SWITCHES)) {
            return 0;
        }
    }
    return i < argc ? i : 0;
}

static int valid_id(const char *id)
{
    return *id && !strchr(id, '/') && strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

/* The container's folder in the root, as ukrun.fast.join makes it; NULL when out of memory. */
static char *join(const char *root, const char *id)
{
    size_t n = strlen(root);
    char *path = malloc(n + strlen(id) + 2);
    if (path)
        sprintf(path, n && root[n - 1] == '/' ? "%s%s" : "%s/%s", root, id);
    return path;
}

/* `delete` with only --force or -f, then an ID: ukrun.fast.parse_delete's rule. */
static int forced_delete(int argc, char **argv, int verb)
{
    int force = 0, i = verb + 1;
    for (; i < argc - 1; i++) {
        if (strcmp(argv[i], "--force") != 0 && strcmp(argv[i], "-f") != 0)
            return 0;
        force = 1;
    }
    return force && i == argc - 1 && argv[i][0] != '-';
}

struct buf {
    char *data;
    size_t len, cap;
    int failed;
};

static void put(struct buf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

/* marshal's format 0: a type byte, then a 32-bit little-endian count or value. */
static void put_u32(struct buf *b, char type, uint32_t v)
{
    unsigned char word[5] = {(unsigned char)type, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
    put(b, word, sizeof word);
}

static void put_bytes(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    put_u32(b, 's', (uint32_t)n);
    put(b, s, n);
}

static void put_list(struct buf *b, char **items, size_t n)
{
    put_u32(b, '[', (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_bytes(b, items[i]);
}

struct zygote {
    pid_t pid;
    int ours, sync_r, commit_w; /* what goes to the worker */
};

/* Forks the zygote, which execs the interpreter on ukrun.launcher.main with its three ends; pid -1 on failure. */
static struct zygote fork_zygote(const char *dir)
{
    struct zygote z = {-1, -1, -1, -1};
    int pair[2], sync[2], commit[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
        return z;
    if (pipe2(sync, O_CLOEXEC) != 0 || pipe2(commit, O_CLOEXEC) != 0) {
        close(pair[0]);
        close(pair[1]);
        return z;
    }
    pid_t pid = fork();
    if (pid == 0) {
        char fds[3][12];
        int theirs[3] = {pair[1], sync[1], commit[0]};
        for (int i = 0; i < 3; i++) {
            fcntl(theirs[i], F_SETFD, 0);
            snprintf(fds[i], sizeof fds[i], "%d", theirs[i]);
        }
        execl(UKRUN_PYTHON, UKRUN_PYTHON, "-IS", "-c", ZYGOTE, UKRUN_SRC, dir, fds[0], fds[1], fds[2], (char *)NULL);
        _exit(1);
    }
    close(pair[1]);
    close(sync[1]);
    close(commit[0]);
    if (pid > 0)
        return (struct zygote){pid, pair[0], sync[0], commit[1]};
    close(pair[0]);
    close(sync[0]);
    close(commit[1]);
    return z;
}

static void let_go(struct zygote *z)
{
    if (z->ours >= 0) {
        close(z->ours);
        close(z->sync_r);
        close(z->commit_w);
        z->ours = -1;
    }
}

static void reap(struct zygote *z)
{
    let_go(z);
    if (z->pid > 0)
        while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR)
            ;
}

/* The request, framed: ukrun.relay.Request's fields in its order. */
static int request(struct buf *b, char *verb, int argc, char **argv, pid_t zygote, const char *dir)
{
    char cwd[4096], ns[3][24], *nsp[3];
    const char *names[3] = {"/proc/self/ns/mnt", "/proc/self/ns/pid", "/proc/self/ns/user"};
    size_t envc = 0;
    struct stat st;
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    for (int i = 0; i < 3; i++) {
        if (stat(names[i], &st) != 0)
            return -1;
        snprintf(ns[i], sizeof ns[i], "%llu", (unsigned long long)st.st_ino);
        nsp[i] = ns[i];
    }
    while (environ[envc])
        envc++;
    put(b, "\0\0\0\0", 4); /* the frame's length, below */
    put_u32(b, '(', FIELDS);
    put_u32(b, 'i', VERSION);
    put_bytes(b, verb);
    put_list(b, argv + 1, (size_t)argc - 1);
    put_list(b, environ, envc);
    put_bytes(b, cwd);
    put_u32(b, 'i', (uint32_t)getppid());
    put_list(b, nsp, 3);
    put_u32(b, 'i', (uint32_t)(zygote > 0 ? zygote : 0));
    put_bytes(b, UKRUN_SRC "/ukrun");
    put_bytes(b, dir);
    if (b->failed)
        return -1;
    uint32_t n = (uint32_t)b->len - 4;
    unsigned char head[4] = {n >> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff};
    memcpy(b->data, head, 4);
    return 0;
}

static int send_request(int sock, struct buf *b, const int *fds, int nfds)
{
    char control[CMSG_SPACE(6 * sizeof(int))];
    struct iovec iov = {b->data, b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
    memset(control, 0, sizeof control);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (sent < 0)
        return -1;
    for (size_t done = (size_t)sent; done < b->len; done += (size_t)sent) /* the rest, without the fds */
        if ((sent = send(sock, b->data + done, b->len - done, MSG_NOSIGNAL)) < 0)
            return -1;
    return 0;
}

static int exact(int sock, char *into, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(sock, into + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static uint32_t u32le(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

enum answer { DIED, FALLBACK, CODE, RUNC };

/* The worker's reply: marshal format 0 of (code, runc, fallback). Anything else is an older helper's refusal. */
static enum answer reply(int sock, int *code, char **runc)
{
    char head[4];
    if (exact(sock, head, 4) != 0)
        return DIED;
    uint32_t n = (uint32_t)(unsigned char)head[0] << 24 | (uint32_t)(unsigned char)head[1] << 16 |
                 (uint32_t)(unsigned char)head[2] << 8 | (unsigned char)head[3];
    char *body = n < (1u << 20) ? malloc((size_t)n + 1) : NULL;
    if (!body || exact(sock, body, n) != 0)
        return DIED;
    body[n] = 0;
    if (n < 20 || memcmp(body, "(\3\0\0\0i", 6) != 0 || body[10] != 's')
        return FALLBACK;
    uint32_t runc_n = u32le(body + 11); /* then a fallback, empty unless the worker refused the call */
    if (runc_n > n - 20 || body[15 + runc_n] != 's' || u32le(body + 16 + runc_n) != 0 || n - 20 != runc_n)
        return FALLBACK;
    *code = (int)u32le(body + 6);
    if (runc_n == 0)
        return CODE;
    body[15 + runc_n] = 0;
    *runc = body + 15;
    return RUNC;
}

static int connected(void)
{
    const char *env = getenv("UKRUN_HELPER"), *path = env && *env ? env : DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return -1;
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock >= 0 && connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(sock);
        return -1;
    }
    return sock;
}

int main(int argc, char **argv)
{
    const char *root = DEFAULT_ROOT;
    int verb = globals(argc, argv, &root);
    if (!verb || !one_of(argv[verb], strlen(argv[verb]), RELAYED))
        python(argc, argv);
    int create = strcmp(argv[verb], "create") == 0;
    char *id = argv[argc - 1];
    if (strcmp(argv[verb], "delete") == 0 && forced_delete(argc, argv, verb) && valid_id(id)) {
        char *path = join(root, id);
        struct stat st;
        if (path && lstat(path, &st) != 0)
            return 0; /* gone: neither ukrun nor runc has anything of it (ukrun.fast.gone) */
    }
    char *dir = create ? (valid_id(id) ? join(root, id) : NULL) : (char *)"";
    int sock = dir ? connected() : -1;
    if (sock < 0)
        python(argc, argv);
    struct zygote z = {0, -1, -1, -1};
    if (create && (z = fork_zygote(dir)).pid < 0)
        python(argc, argv);
    struct buf b = {0};
    int fds[6] = {0, 1, 2, z.ours, z.sync_r, z.commit_w};
    if (request(&b, argv[verb], argc, argv, z.pid, dir) != 0 || send_request(sock, &b, fds, create ? 6 : 3) != 0) {
        close(sock);
        reap(&z);
        python(argc, argv); /* nothing reached a worker */
    }
    let_go(&z); /* the worker holds the zygote's ends now: it alone decides its fate */
    int code = 1;
    char *runc = NULL;
    enum answer answer = reply(sock, &code, &runc);
    close(sock);
    reap(&z);
    switch (answer) {
    case DIED:
        return 1; /* a failed verb, reclaimed like any crash */
    case FALLBACK:
        python(argc, argv);
    case RUNC:
        argv[0] = runc;
        execv(runc, argv);
        fprintf(stderr, "ukrun: cannot run %s: %s\n", runc, strerror(errno));
        return 1;
    case CODE:
        break;
    }
    return code;
}
