/*
 * godwit-netutil: what iproute2 cannot tell godwit about a net namespace. Today one question: which
 * nftables tables exist in it (godwit refuses to checkpoint a container with firewall rules it cannot carry,
 * and this host has no nft tool). The namespace is entered with setns(2) from a namespace file.
 *
 *   godwit-netutil nft-tables NSPATH   -> one line "FAMILY NAME" per table (FAMILY as nft names it)
 *
 * A kernel without nf_tables has no tables: prints nothing, exit 0.
 * Errors: one line on stderr "godwit-netutil: SYSCALL(WHAT): strerror", exit 1; bad usage exit 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A dump reply arrives in datagrams of at most a page or two; 64 KiB holds any of them. */
#define RECV_BUF 65536
/* A table name is at most NFT_NAME_MAXLEN (256) bytes; more tables than this is not a container's. */
#define MAX_TABLES 100000

struct ctx {
	int err;
	const char *syscall;
	char what[160];
};

static int fail(struct ctx *c, const char *sc, int e, const char *fmt, ...)
{
	if (!c->syscall) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->what, sizeof(c->what), fmt, ap);
		va_end(ap);
		c->syscall = sc;
		c->err = e;
	}
	return -1;
}

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define AUTOCLOSE __attribute__((cleanup(closep)))

static int enter_netns(struct ctx *c, const char *path)
{
	AUTOCLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(c, "open", errno, "%s", path);
	if (setns(fd, CLONE_NEWNET) < 0)
		return fail(c, "setns", errno, "%s", path);
	return 0;
}

static const char *family_name(int f)
{
	switch (f) {
	case 1: return "inet";     /* NFPROTO_INET */
	case 2: return "ip";       /* NFPROTO_IPV4 */
	case 3: return "arp";      /* NFPROTO_ARP */
	case 5: return "netdev";   /* NFPROTO_NETDEV */
	case 7: return "bridge";   /* NFPROTO_BRIDGE */
	case 10: return "ip6";     /* NFPROTO_IPV6 */
	default: return "unknown";
	}
}

/* Prints the table of one NFT_MSG_NEWTABLE message. */
static void print_table(struct nlmsghdr *h)
{
	struct nfgenmsg *g = NLMSG_DATA(h);
	size_t off = NLMSG_ALIGN(sizeof(*g));
	size_t len = h->nlmsg_len - NLMSG_HDRLEN;
	const char *name = "?";
	while (off + sizeof(struct nlattr) <= len) {
		struct nlattr *a = (struct nlattr *)((char *)g + off);
		if (a->nla_len < sizeof(*a) || off + a->nla_len > len)
			break;
		if ((a->nla_type & NLA_TYPE_MASK) == NFTA_TABLE_NAME && a->nla_len > sizeof(*a)) {
			char *s = (char *)a + NLA_HDRLEN;
			size_t n = a->nla_len - NLA_HDRLEN;
			if (memchr(s, 0, n)) /* names are NUL-terminated strings */
				name = s;
		}
		off += NLA_ALIGN(a->nla_len);
	}
	printf("%s %s\n", family_name(g->nfgen_family), name);
}

static int nft_tables(struct ctx *c, const char *path)
{
	if (enter_netns(c, path) < 0)
		return -1;
	AUTOCLOSE int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (s < 0) {
		if (errno == EPROTONOSUPPORT)
			return 0; /* no nfnetlink: no nftables */
		return fail(c, "socket", errno, "NETLINK_NETFILTER");
	}
	struct {
		struct nlmsghdr h;
		struct nfgenmsg g;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
		       .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
		.g = { .nfgen_family = 0 /* AF_UNSPEC: every family */, .version = NFNETLINK_V0 },
	};
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(s, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return fail(c, "sendto", errno, "NFT_MSG_GETTABLE dump");
	static char buf[RECV_BUF];
	int tables = 0;
	for (;;) {
		ssize_t n = recv(s, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail(c, "recv", errno, "NFT_MSG_GETTABLE dump");
		}
		if (n == 0)
			return fail(c, "recv", EPROTO, "netlink socket closed before the dump ended");
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);
				if (e->error == 0)
					continue;
				if (e->error == -EOPNOTSUPP || e->error == -EPROTONOSUPPORT)
					return 0; /* nfnetlink without nf_tables */
				return fail(c, "netlink", -e->error, "NFT_MSG_GETTABLE dump");
			}
			if (h->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE)) {
				if (++tables > MAX_TABLES)
					return fail(c, "netlink", E2BIG, "more than %d nftables tables", MAX_TABLES);
				print_table(h);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct ctx c = { 0 };
	if (argc != 3 || strcmp(argv[1], "nft-tables") != 0) {
		fprintf(stderr, "usage: godwit-netutil nft-tables NSPATH\n");
		return 2;
	}
	if (nft_tables(&c, argv[2]) < 0) {
		fprintf(stderr, "godwit-netutil: %s(%s): %s\n", c.syscall, c.what, strerror(c.err));
		return 1;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "godwit-netutil: write(stdout): %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
