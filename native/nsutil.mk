# godwit-nsutil (uts/ipc namespace content, see nsutil/gw-nsutil.c). Included by the Makefile.
NSU_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE

all: build/godwit-nsutil

build/godwit-nsutil: nsutil/gw-nsutil.c
	@mkdir -p build
	$(CC) $(NSU_CFLAGS) -o $@ $<
