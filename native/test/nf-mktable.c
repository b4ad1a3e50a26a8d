/*
 * Test tool for test/net.test.ts: makes a net namespace hold firewall state that godwit must refuse to
 * checkpoint, without the iptables/nft tools (not installed here).
 *
 *   nf-mktable NSPATH nft   creates the nftables table "inet gwtest"
 *   nf-mktable NSPATH xt    instantiates the iptables "filter" table (IPT_SO_GET_INFO does it on first use)
 *
 * Exit 0 on success; "nf-mktable: SYSCALL: strerror" on stderr and exit 1 otherwise.
 */
/* netinet/in.h before the linux/ headers: its libc-compat guards then keep linux/in.h quiet. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netlink.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int die(const char *what)
{
	fprintf(stderr, "nf-mktable: %s: %s\n", what, strerror(errno));
	return 1;
}

static size_t put_msg(char *buf, size_t off, uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id, const char *name)
{
	struct nlmsghdr *h = (struct nlmsghdr *)(buf + off);
	memset(h, 0, NLMSG_HDRLEN);
	h->nlmsg_type = type;
	h->nlmsg_flags = NLM_F_REQUEST | flags;
	h->nlmsg_seq = (uint32_t)off + 1;
	struct nfgenmsg *g = NLMSG_DATA(h);
	g->nfgen_family = family;
	g->version = NFNETLINK_V0;
	g->res_id = htons(res_id);
	size_t len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(*g));
	if (name) {
		struct nlattr *a = (struct nlattr *)((char *)h + len);
		a->nla_type = NFTA_TABLE_NAME;
		a->nla_len = NLA_HDRLEN + strlen(name) + 1;
		memcpy((char *)a + NLA_HDRLEN, name, strlen(name) + 1);
		len += NLA_ALIGN(a->nla_len);
	}
	h->nlmsg_len = len;
	return off + NLMSG_ALIGN(len);
}

static int make_nft(void)
{
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (s < 0)
		return die("socket(NETLINK_NETFILTER)");
	char buf[512] = { 0 };
	size_t off = put_msg(buf, 0, NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, NULL);
	off = put_msg(buf, off, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0, "gwtest");
	off = put_msg(buf, off, NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, NULL);
	struct sockaddr_nl k = { .nl_family = AF_NETLINK };
	if (sendto(s, buf, off, 0, (struct sockaddr *)&k, sizeof(k)) < 0)
		return die("sendto(NFT_MSG_NEWTABLE)");
	char ack[4096];
	ssize_t n = recv(s, ack, sizeof(ack), 0);
	if (n < 0)
		return die("recv(ack)");
	for (struct nlmsghdr *h = (struct nlmsghdr *)ack; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
		if (h->nlmsg_type == NLMSG_ERROR) {
			struct nlmsgerr *e = NLMSG_DATA(h);
			if (e->error) {
				errno = -e->error;
				return die("NFT_MSG_NEWTABLE");
			}
		}
	}
	close(s);
	return 0;
}

static int make_xt(void)
{
	int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (s < 0)
		return die("socket(AF_INET, SOCK_RAW)");
	struct ipt_getinfo info = { 0 };
	strcpy(info.name, "filter");
	socklen_t len = sizeof(info);
	if (getsockopt(s, IPPROTO_IP, IPT_SO_GET_INFO, &info, &len) < 0)
		return die("getsockopt(IPT_SO_GET_INFO filter)");
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 || (strcmp(argv[2], "nft") && strcmp(argv[2], "xt"))) {
		fprintf(stderr, "usage: nf-mktable NSPATH nft|xt\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return die("open(NSPATH)");
	if (setns(fd, CLONE_NEWNET) < 0)
		return die("setns");
	close(fd);
	return strcmp(argv[2], "nft") == 0 ? make_nft() : make_xt();
}
