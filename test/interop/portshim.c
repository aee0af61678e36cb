/*
 * portshim.c: LD_PRELOAD library for the interop tests only.
 *
 * NTPsec 1.2.2 binds its sockets to fixed ports (UDP 123 for NTP, TCP 4460 for NTS-KE), which a test
 * cannot use: they may be taken, and tests must run side by side on free ports. This library wraps
 * bind(2):
 *   - a bind to port 123  is moved to the port in $SHIM_NTP_PORT   (when set to 1..65535),
 *   - a bind to port 4460 is moved to the port in $SHIM_NTSKE_PORT (when set to 1..65535),
 *   - on those two ports a wildcard address (0.0.0.0 or ::) becomes loopback (127.0.0.1 or ::1),
 *     so nothing the tests start is reachable from off the host.
 * Every other bind passes through untouched.
 *
 * Build: gcc -O2 -shared -fPIC -o portshim.so portshim.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

/* Port number from an environment variable, or 0 when unset or out of range. */
static unsigned short port_from_env(const char *variable) {
    const char *text = getenv(variable);
    if (text == NULL || *text == '\0') return 0;
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == NULL || *end != '\0' || value < 1 || value > 65535) return 0;
    return (unsigned short)value;
}

/* Replacement for a well-known port, or 0 to leave the bind alone. */
static unsigned short replacement_for(unsigned short port) {
    if (port == 123) return port_from_env("SHIM_NTP_PORT");
    if (port == 4460) return port_from_env("SHIM_NTSKE_PORT");
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t addrlen) {
    static bind_fn next_bind = NULL;
    if (next_bind == NULL) {
        next_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
        if (next_bind == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    if (addr == NULL) return next_bind(fd, addr, addrlen);

    if (addr->sa_family == AF_INET && addrlen >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in v4;
        memcpy(&v4, addr, sizeof v4);
        unsigned short moved = replacement_for(ntohs(v4.sin_port));
        if (moved == 0) return next_bind(fd, addr, addrlen);
        v4.sin_port = htons(moved);
        if (v4.sin_addr.s_addr == htonl(INADDR_ANY)) v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return next_bind(fd, (const struct sockaddr *)&v4, sizeof v4);
    }
    if (addr->sa_family == AF_INET6 && addrlen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 v6;
        memcpy(&v6, addr, sizeof v6);
        unsigned short moved = replacement_for(ntohs(v6.sin6_port));
        if (moved == 0) return next_bind(fd, addr, addrlen);
        v6.sin6_port = htons(moved);
        if (memcmp(&v6.sin6_addr, &in6addr_any, sizeof v6.sin6_addr) == 0) v6.sin6_addr = in6addr_loopback;
        return next_bind(fd, (const struct sockaddr *)&v6, sizeof v6);
    }
    return next_bind(fd, addr, addrlen);
}
