# godwit-restorer (restore side of the native layer; see src/restore/rst.h). Included by the Makefile.
RST_SRC := $(wildcard src/restore/*.c)
RST_HDR := $(wildcard src/restore/*.h)
RST_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE

all: build/godwit-restorer

build/godwit-restorer: $(RST_SRC) $(RST_HDR)
	@mkdir -p build
	$(CC) $(RST_CFLAGS) -o $@ $(RST_SRC)
