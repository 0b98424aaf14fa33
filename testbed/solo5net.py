"""A MirageOS-style Solo5 unikernel that answers ARP and ICMP echo, built here for the network tests.

Solo5's own test_net declares its net device as `service0` and answers only at its fixed 10.0.0.2,
refusing any command line but `verbose` or `limit`, so it never sees MirageOS's address flags. This one
follows MirageOS's conventions instead, so that the path a MirageOS unikernel takes is booted too: its
manifest declares `service`, and it takes its address from `--ipv4=<addr>/<prefix>` on its command
line (and prints `--ipv4-gateway=`). It is compiled from the C
below with the Solo5 toolchain that scripts/build-unikernels left in its work folder (or
$UKRUN_SOLO5_TOOLCHAIN, a Solo5 tree with `toolchain/bin` and `elftool/solo5-elftool`): nothing is
downloaded and nothing of Solo5's enters this repository.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from testbed.unikernels import BUILT, need

SOLO5_TREE = Path(os.environ.get("UKRUN_SOLO5_TOOLCHAIN", str(BUILT / ".build" / "solo5" / "src")))
TRIPLE = "x86_64-solo5-none-static"
NET_DEVICE = "service"
SERVING = "Serving ping on "

SOURCE = r"""
#include "solo5.h"

void *memset(void *dest, int c, size_t n)
{
    unsigned char *d = dest;
    while (n--)
        *d++ = (unsigned char)c;
    return dest;
}

void *memcpy(void *restrict dest, const void *restrict src, size_t n)
{
    unsigned char *d = dest;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dest;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *l = a, *r = b;
    for (; n && *l == *r; n--, l++, r++)
        ;
    return n ? *l - *r : 0;
}

static size_t len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void out(const char *s)
{
    solo5_console_write(s, len(s));
}

static void out_ip(const uint8_t ip[4])
{
    char buf[16];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        unsigned v = ip[i];
        if (v >= 100)
            buf[n++] = (char)('0' + v / 100);
        if (v >= 10)
            buf[n++] = (char)('0' + (v / 10) % 10);
        buf[n++] = (char)('0' + v % 10);
        if (i < 3)
            buf[n++] = '.';
    }
    solo5_console_write(buf, n);
}

/* Parses "a.b.c.d" at s; returns the character after it, or 0. */
static const char *parse_ip(const char *s, uint8_t ip[4])
{
    for (int i = 0; i < 4; i++) {
        unsigned v = 0, digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 3) {
            v = v * 10 + (unsigned)(*s++ - '0');
            digits++;
        }
        if (!digits || v > 255)
            return 0;
        ip[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.')
            return 0;
    }
    return s;
}

/* The value of "--name=" in a space-separated command line, or 0. */
static const char *option(const char *cmdline, const char *name)
{
    size_t n = len(name);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!memcmp(p, name, n))
            return p + n;
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

struct ether { uint8_t target[6]; uint8_t source[6]; uint16_t type; } __attribute__((packed));
struct arp {
    uint16_t htype, ptype; uint8_t hlen, plen; uint16_t op;
    uint8_t sha[6], spa[4], tha[6], tpa[4];
} __attribute__((packed));
struct ip {
    uint8_t version_ihl, tos; uint16_t length, id, flags_offset; uint8_t ttl, proto;
    uint16_t checksum; uint8_t src[4], dst[4];
} __attribute__((packed));
struct icmp { uint8_t type, code; uint16_t checksum; } __attribute__((packed));

static uint16_t be16(uint16_t x) { return (uint16_t)((x << 8) | (x >> 8)); }

static uint16_t checksum(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (; n > 1; n -= 2, p += 2)
        sum += (uint32_t)(p[0] | p[1] << 8);
    if (n)
        sum += p[0];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint8_t my_ip[4];
static struct solo5_net_info info;
static solo5_handle_t handle;
static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Turns the frame in buf into its answer; returns whether there is one. */
static int answer(uint8_t *buf, size_t n)
{
    struct ether *e = (struct ether *)buf;
    if (n < sizeof *e || (memcmp(e->target, info.mac_address, 6) && memcmp(e->target, broadcast, 6)))
        return 0;
    if (e->type == be16(0x0806) && n >= sizeof *e + sizeof(struct arp)) {
        struct arp *a = (struct arp *)(e + 1);
        if (a->op != be16(1) || memcmp(a->tpa, my_ip, 4))
            return 0;
        memcpy(e->target, e->source, 6);
        memcpy(e->source, info.mac_address, 6);
        memcpy(a->tha, a->sha, 6);
        memcpy(a->tpa, a->spa, 4);
        memcpy(a->sha, info.mac_address, 6);
        memcpy(a->spa, my_ip, 4);
        a->op = be16(2);
        return 1;
    }
    if (e->type == be16(0x0800) && n >= sizeof *e + sizeof(struct ip) + sizeof(struct icmp)) {
        struct ip *ip = (struct ip *)(e + 1);
        struct icmp *icmp = (struct icmp *)(ip + 1);
        size_t total = be16(ip->length);
        if (ip->version_ihl != 0x45 || ip->proto != 1 || memcmp(ip->dst, my_ip, 4) || icmp->type != 8
            || total < sizeof *ip + sizeof *icmp || total > n - sizeof *e)
            return 0;
        memcpy(e->target, e->source, 6);
        memcpy(e->source, info.mac_address, 6);
        memcpy(ip->dst, ip->src, 4);
        memcpy(ip->src, my_ip, 4);
        ip->checksum = 0;
        ip->checksum = checksum((const uint8_t *)ip, sizeof *ip);
        icmp->type = 0;
        icmp->checksum = 0;
        icmp->checksum = checksum((const uint8_t *)icmp, total - sizeof *ip);
        return 1;
    }
    return 0;
}

int solo5_app_main(const struct solo5_start_info *si)
{
    uint8_t gateway[4] = {0, 0, 0, 0};
    const char *v = option(si->cmdline, "--ipv4=");
    const char *end = v ? parse_ip(v, my_ip) : 0;
    if (!end || *end != '/') {
        out("no --ipv4=<addr>/<prefix> on the command line\n");
        return SOLO5_EXIT_FAILURE;
    }
    v = option(si->cmdline, "--ipv4-gateway=");
    if (v)
        parse_ip(v, gateway);
    if (solo5_net_acquire("service", &handle, &info) != SOLO5_R_OK) {
        out("could not acquire 'service'\n");
        return SOLO5_EXIT_FAILURE;
    }
    out("Serving ping on ");
    out_ip(my_ip);
    out(", gateway ");
    out_ip(gateway);
    out("\n");
    for (;;) {
        uint8_t buf[info.mtu + SOLO5_NET_HLEN];
        solo5_handle_set_t ready = 0;
        size_t n;
        solo5_yield(solo5_clock_monotonic() + 1000000000ULL, &ready);
        if (!(ready & (1U << handle)))
            continue;
        if (solo5_net_read(handle, buf, sizeof buf, &n) != SOLO5_R_OK)
            continue;
        if (answer(buf, n) && solo5_net_write(handle, buf, n) != SOLO5_R_OK) {
            out("write error\n");
            return SOLO5_EXIT_FAILURE;
        }
    }
}
"""


def build(out_dir: Path, abi: str) -> Path:
    """The ping responder for solo5-`abi` (spt, hvt) in `out_dir`; skips when no Solo5 toolchain is at hand."""
    cc = need(SOLO5_TREE / "toolchain" / "bin" / f"{TRIPLE}-cc")
    elftool = need(SOLO5_TREE / "elftool" / "solo5-elftool")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ping.c").write_text(SOURCE)
    manifest = {"type": "solo5.manifest", "version": 1, "devices": [{"name": NET_DEVICE, "type": "NET_BASIC"}]}
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    steps = [
        [str(elftool), "gen-manifest", "manifest.json", "manifest.c"],
        [str(cc), "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-c", "ping.c", "-o", "ping.o"],
        [str(cc), "-std=c11", "-O2", "-c", "manifest.c", "-o", "manifest.o"],
        [str(cc), "-z", f"solo5-abi={abi}", "ping.o", "manifest.o", "-o", f"ping.{abi}"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return out_dir / f"ping.{abi}"
