/* A hostile image's entrypoint for tests/probe.rs: each action tries one escape from the probe
 * sandbox and prints what happened, one line per attempt ("NAME: ok" or "NAME: <errno name>").
 * Nothing here changes the host even where it succeeds: sysctls are probed by opening them
 * for writing (randomize_va_space is written with the value it already has). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *what, long rc) {
    if (rc < 0)
        printf("%s: %s\n", what, strerrorname_np(errno));
    else
        printf("%s: ok\n", what);
    fflush(stdout);
}

static void writable(const char *path) {
    int fd = open(path, O_WRONLY);
    say(path, fd);
    if (fd >= 0)
        close(fd);
}

static void sysctls(void) {
    /* Written back with its own value: no change even if the write went through. */
    char cur[16] = {0};
    int fd = open("/proc/sys/kernel/randomize_va_space", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, cur, sizeof cur - 1) < 0)
            cur[0] = 0;
        close(fd);
    }
    fd = open("/proc/sys/kernel/randomize_va_space", O_WRONLY);
    long rc = fd;
    if (fd >= 0) {
        rc = write(fd, cur, strlen(cur));
        close(fd);
    }
    say("write randomize_va_space", rc);
    writable("/proc/sys/vm/drop_caches");
    writable("/proc/sys/kernel/core_pattern");
    writable("/proc/sysrq-trigger");
    writable("/sys/kernel/mm/transparent_hugepage/enabled");
}

static void readable(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        say(path, fd);
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        say(path, -1);
    else
        printf("%s: read %zd bytes\n", path, n);
    fflush(stdout);
}

static void entries(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        say(path, -1);
        return;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    printf("%s: %d entries\n", path, n);
    fflush(stdout);
}

static void kernel_calls(int port) {
    say("add_key", syscall(SYS_add_key, "user", "pare", "x", 1, -2 /* process keyring */));
    say("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    say("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    mkdir("/mnt", 0755);
    say("mount", mount("/", "/mnt", NULL, MS_BIND, NULL));
    say("mount proc", mount("proc", "/mnt", "proc", 0, NULL));
    say("ptrace pid 1", ptrace(PTRACE_ATTACH, 1, 0, 0));
    say("open /proc/1/mem", open("/proc/1/mem", O_RDONLY));
    say("unshare user", unshare(CLONE_NEWUSER));
    say("unshare mount", unshare(CLONE_NEWNS));
    say("clone3", syscall(SYS_clone3, NULL, 0));
    say("setns", syscall(SYS_setns, 0, 0));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    say("connect host port", connect(s, (struct sockaddr *)&a, sizeof a));
    say("kill -1", kill(-1, SIGKILL));
}

static void status(void) {
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Seccomp:", 8) || !strncmp(line, "CapEff:", 7) ||
            !strncmp(line, "NoNewPrivs:", 11))
            fputs(line, stdout);
    if (f)
        fclose(f);
    struct stat st;
    printf("uid: %d\n", getuid());
    if (stat("/owned", &st) == 0)
        printf("/owned: %d:%d\n", st.st_uid, st.st_gid);
    if (stat("/etc/passwd", &st) == 0)
        printf("/etc/passwd: %d:%d\n", st.st_uid, st.st_gid);
}

/* Children that each touch 1 GiB and then wait; the parent says how many the OOM killer
 * ended once every child has either finished touching its memory or died. */
static void memory_bomb(int children) {
    int done[2];
    if (pipe(done) < 0)
        return;
    for (int i = 0; i < children; i++) {
        if (fork() == 0) {
            for (int mib = 0; mib < 1024; mib += 64) {
                char *p = malloc(64 << 20);
                if (!p)
                    _exit(3);
                memset(p, 1, 64 << 20);
            }
            if (write(done[1], "x", 1) < 0)
                _exit(4);
            pause();
            _exit(0);
        }
    }
    fcntl(done[0], F_SETFL, O_NONBLOCK);
    int finished = 0, killed = 0, other = 0, status;
    while (finished + killed + other < children) {
        char c;
        while (read(done[0], &c, 1) == 1)
            finished++;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            killed++;
        else if (p > 0)
            other++;
        else
            usleep(10000);
    }
    printf("memory bomb: %d of %d children killed by the OOM killer, %d held 1 GiB\n", killed,
           children, finished);
    fflush(stdout);
    kill(-1, SIGKILL);
}

/* Writes 64 KiB files until a write fails. */
static void disk_fill(void) {
    static char buf[64 << 10];
    memset(buf, 'x', sizeof buf);
    mkdir("/fill", 0755);
    long files = 0;
    for (;;) {
        char name[64];
        snprintf(name, sizeof name, "/fill/%ld", files);
        int fd = open(name, O_WRONLY | O_CREAT, 0644);
        if (fd < 0)
            break;
        ssize_t n = write(fd, buf, sizeof buf);
        if (n >= 0 && n < (ssize_t)sizeof buf)
            n = write(fd, buf + n, sizeof buf - n); /* a short write: the next one says why */
        close(fd);
        if (n < 0)
            break;
        files++;
    }
    printf("disk fill: stopped after %ld files (%ld MiB): %s\n", files, files / 16,
           strerrorname_np(errno));
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "status";
    if (!strcmp(what, "sysctl"))
        sysctls();
    else if (!strcmp(what, "proc")) {
        readable("/proc/kcore");
        readable("/proc/keys");
        readable("/proc/timer_list");
        entries("/sys/firmware");
        entries("/proc/acpi");
    } else if (!strcmp(what, "kernel"))
        kernel_calls(argc > 2 ? atoi(argv[2]) : 1);
    else if (!strcmp(what, "status"))
        status();
    else if (!strcmp(what, "sysinfo")) {
        struct sysinfo si;
        say("sysinfo", sysinfo(&si));
    } else if (!strcmp(what, "sleep"))
        sleep(argc > 2 ? atoi(argv[2]) : 1000);
    else if (!strcmp(what, "forkbomb"))
        for (;;)
            fork();
    else if (!strcmp(what, "membomb"))
        memory_bomb(argc > 2 ? atoi(argv[2]) : 8);
    else if (!strcmp(what, "diskfill"))
        disk_fill();
    else {
        fprintf(stderr, "unknown action %s\n", what);
        return 2;
    }
    return 0;
}
