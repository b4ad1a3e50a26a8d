# godwit-netutil (net namespace questions iproute2 cannot answer, see netutil/gw-netutil.c). Included by the Makefile.
NETU_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE

all: build/godwit-netutil

build/godwit-netutil: netutil/gw-netutil.c
	@mkdir -p build
	$(CC) $(NETU_CFLAGS) -o $@ $<

# Test tool: puts nftables / iptables state into a namespace (test/net.test.ts checks that godwit refuses it).
all: build/nf-mktable

build/nf-mktable: test/nf-mktable.c
	@mkdir -p build
	$(CC) $(NETU_CFLAGS) -o $@ $<
