// SPDX-License-Identifier: Apache-2.0
// Running iptables-restore, iptables-save and nft: posix_spawnp with an argument array (never a
// shell), the rules fed on stdin and both outputs collected through pipes into capped buffers.
// One poll loop writes and reads at once, so a tool that writes a lot before reading all of its
// input cannot deadlock us, and a deadline kills a tool that hangs (a held xtables lock). SIGPIPE
// is blocked while we write (a tool that exits without reading its input must not kill us) and
// the child starts with an empty signal mask and default dispositions.
#include "roles/iptables/iptables.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

extern char **environ;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Reads what <fd> has into <b> (discarding when <b> is NULL or full, and noting it in
 * <*overflow>). Returns false at end of file or on an error. */
static bool drain(int fd, struct sc_buf *b, bool *overflow)
{
    char chunk[16384];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return true;
    }
    if (n <= 0) {
        return false;
    }
    if (b && sc_buf_append(b, chunk, (size_t)n) < 0) {
        *overflow = true;
    }
    return true;
}

int iptables_exec(const char *const argv[], const char *input, size_t inlen, struct sc_buf *out,
                  struct sc_buf *errout, int timeout_ms)
{
    int in[2] = { -1, -1 }, o[2] = { -1, -1 }, e[2] = { -1, -1 };
    int rc;
    pid_t pid = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_init = false;
    sigset_t pipe_only, old_mask, none;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigemptyset(&none);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    fa_init = true;
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &pipe_only);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    rc = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, environ);
    if (rc != 0) {
        rc = -rc;
        pid = -1;
        goto out;
    }
    close_fd(&in[0]);
    close_fd(&o[1]);
    close_fd(&e[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    if (!input || inlen == 0) {
        close_fd(&in[1]);
    }

    size_t written = 0;
    bool overflow = false;
    int64_t deadline = now_ms() + timeout_ms;
    while (o[0] >= 0 || e[0] >= 0) {
        struct pollfd pf[3];
        int n = 0, io = -1, ie = -1, iw = -1;
        if (o[0] >= 0) {
            io = n;
            pf[n++] = (struct pollfd){ .fd = o[0], .events = POLLIN };
        }
        if (e[0] >= 0) {
            ie = n;
            pf[n++] = (struct pollfd){ .fd = e[0], .events = POLLIN };
        }
        if (in[1] >= 0) {
            iw = n;
            pf[n++] = (struct pollfd){ .fd = in[1], .events = POLLOUT };
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            rc = SC_ETIMEDOUT;
            goto out;
        }
        int r = poll(pf, (nfds_t)n, (int)left);
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            goto out;
        }
        if (r <= 0) {
            continue;
        }
        if (io >= 0 && pf[io].revents && !drain(o[0], out, &overflow)) {
            close_fd(&o[0]);
        }
        if (ie >= 0 && pf[ie].revents && !drain(e[0], errout, &overflow)) {
            close_fd(&e[0]);
        }
        if (iw >= 0 && pf[iw].revents) {
            ssize_t w =
                pf[iw].revents & POLLOUT ? write(in[1], input + written, inlen - written) : -1;
            if (w > 0) {
                written += (size_t)w;
            }
            /* A tool that stops reading (it failed early) gets EOF; its status tells. */
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == inlen ||
                (pf[iw].revents & (POLLERR | POLLHUP))) {
                close_fd(&in[1]);
            }
        }
    }
    close_fd(&in[1]);
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            break;
        }
        if (w < 0 && errno != EINTR) {
            rc = -errno;
            pid = -1;
            goto out;
        }
        if (now_ms() >= deadline) {
            rc = SC_ETIMEDOUT;
            goto out;
        }
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    pid = -1;
    if (overflow) {
        rc = SC_ETOOBIG;
    } else if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
    } else {
        rc = 128 + WTERMSIG(status);
    }
out:
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (fa_init) {
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
    }
    /* Consume a SIGPIPE our writes raised before unblocking it, unless it was already blocked. */
    if (!sigismember(&old_mask, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_only, NULL, &zero) == SIGPIPE) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&o[0]);
    close_fd(&o[1]);
    close_fd(&e[0]);
    close_fd(&e[1]);
    return rc;
}

bool iptables_have_tool(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path) {
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    }
    char full[4096];
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len &&
            (size_t)snprintf(full, sizeof(full), "%.*s/%s", (int)len, path, name) < sizeof(full)) {
            struct stat st;
            if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0) {
                return true;
            }
        }
        path += len + (colon ? 1 : 0);
    }
    return false;
}
