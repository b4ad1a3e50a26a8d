/* A small protobuf codec: just what helper.proto needs (varints, length-delimited fields, nested messages,
 * repeated fields packed or not). Field numbers come from fields.h.
 *
 * Writing: a growable buffer; allocation failure sets .oom and turns later writes into no-ops, checked once
 * when the message is sent. Reading: a cursor over a complete message that yields one field at a time. */
#ifndef GODWIT_PB_H
#define GODWIT_PB_H

#include <stddef.h>
#include <stdint.h>

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

struct pb_buf {
	uint8_t *data;
	size_t len, cap;
	int oom;
};

void pb_buf_free(struct pb_buf *b);
void pb_reset(struct pb_buf *b);
/* Reserves room for n more bytes; returns a pointer to them or NULL (and sets oom). */
uint8_t *pb_reserve(struct pb_buf *b, size_t n);

void pb_varint(struct pb_buf *b, unsigned field, uint64_t v);
/* int32/int64 fields: negative values are sign-extended to 64 bits (10 bytes), as protobuf does. */
void pb_int(struct pb_buf *b, unsigned field, int64_t v);
void pb_bytes(struct pb_buf *b, unsigned field, const void *data, size_t len);
void pb_string(struct pb_buf *b, unsigned field, const char *s);
/* Nested message: size_t m = pb_begin(b, field); ...fields...; pb_end(b, m); */
size_t pb_begin(struct pb_buf *b, unsigned field);
void pb_end(struct pb_buf *b, size_t mark);

struct pb_reader {
	const uint8_t *p, *end;
};

struct pb_field {
	unsigned num;
	unsigned wire;
	uint64_t v;          /* PB_VARINT, PB_I64, PB_I32 */
	const uint8_t *data; /* PB_LEN */
	size_t len;
};

static inline struct pb_reader pb_reader(const void *data, size_t len)
{
	struct pb_reader r = { data, (const uint8_t *)data + len };
	return r;
}

/* 1: a field was read into f; 0: end of message; -1: malformed input. */
int pb_next(struct pb_reader *r, struct pb_field *f);
int pb_read_varint(struct pb_reader *r, uint64_t *v);

/* Iterates the values of a repeated scalar field that may come packed (one PB_LEN field) or not (one PB_VARINT
 * field per value): for (pb_values_init(&it, f); pb_values_next(&it, &v) > 0;) ... ; returns -1 if malformed. */
struct pb_values {
	struct pb_reader r;
	uint64_t single;
	int state; /* 0: single value pending, 1: packed, 2: done */
};
void pb_values_init(struct pb_values *it, const struct pb_field *f);
int pb_values_next(struct pb_values *it, uint64_t *v);

#endif
