# godwit-restorer (restore side of the native layer; see src/restore/rst.h). Included by the Makefile.
# Links libzstd and zlib (pages-N.gwz is decompressed and checked in the restorer): libzstd-dev and zlib1g-dev,
# installed by scripts/setup.sh.
RST_SRC := $(wildcard src/restore/*.c)
RST_HDR := $(wildcard src/restore/*.h)
RST_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE

all: build/godwit-restorer

build/godwit-restorer: $(RST_SRC) $(RST_HDR) common/crc32.c common/crc32.h
	@mkdir -p build
	$(CC) $(RST_CFLAGS) -pthread -o $@ $(RST_SRC) common/crc32.c -lzstd -lz
