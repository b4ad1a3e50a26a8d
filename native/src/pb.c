#define _GNU_SOURCE
#include "pb.h"

#include <stdlib.h>
#include <string.h>

void pb_buf_free(struct pb_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}

void pb_reset(struct pb_buf *b)
{
	b->len = 0;
	b->oom = 0;
}

uint8_t *pb_reserve(struct pb_buf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *d = realloc(b->data, cap);
		if (!d) {
			b->oom = 1;
			return NULL;
		}
		b->data = d;
		b->cap = cap;
	}
	return b->data + b->len;
}

static size_t varint_size(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t put_raw_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static void raw_varint(struct pb_buf *b, uint64_t v)
{
	uint8_t *p = pb_reserve(b, 10);
	if (p)
		b->len += put_raw_varint(p, v);
}

void pb_varint(struct pb_buf *b, unsigned field, uint64_t v)
{
	raw_varint(b, (uint64_t)field << 3 | PB_VARINT);
	raw_varint(b, v);
}

void pb_int(struct pb_buf *b, unsigned field, int64_t v)
{
	pb_varint(b, field, (uint64_t)v);
}

void pb_bytes(struct pb_buf *b, unsigned field, const void *data, size_t len)
{
	raw_varint(b, (uint64_t)field << 3 | PB_LEN);
	raw_varint(b, len);
	uint8_t *p = pb_reserve(b, len);
	if (p && len) {
		memcpy(p, data, len);
		b->len += len;
	}
}

void pb_string(struct pb_buf *b, unsigned field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

/* The length of a nested message is known only at its end: reserve one byte, and move the body if the final
 * length needs more. Bodies are small except for bulk-free payloads of a few hundred KiB, so the move is cheap. */
size_t pb_begin(struct pb_buf *b, unsigned field)
{
	raw_varint(b, (uint64_t)field << 3 | PB_LEN);
	uint8_t *p = pb_reserve(b, 1);
	if (p)
		b->len += 1;
	return b->len;
}

void pb_end(struct pb_buf *b, size_t mark)
{
	if (b->oom)
		return;
	size_t body = b->len - mark;
	size_t n = varint_size(body);
	if (n > 1) {
		if (!pb_reserve(b, n - 1))
			return;
		memmove(b->data + mark + n - 1, b->data + mark, body);
		b->len += n - 1;
	}
	put_raw_varint(b->data + mark - 1, body);
}

int pb_read_varint(struct pb_reader *r, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->end)
			return -1;
		uint8_t c = *r->p++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

int pb_next(struct pb_reader *r, struct pb_field *f)
{
	if (r->p >= r->end)
		return 0;
	uint64_t key;
	if (pb_read_varint(r, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
		return -1;
	f->num = (unsigned)(key >> 3);
	f->wire = (unsigned)(key & 7);
	f->data = NULL;
	f->len = 0;
	f->v = 0;
	switch (f->wire) {
	case PB_VARINT:
		return pb_read_varint(r, &f->v) ? -1 : 1;
	case PB_I64:
		if (r->end - r->p < 8)
			return -1;
		memcpy(&f->v, r->p, 8);
		r->p += 8;
		return 1;
	case PB_I32: {
		uint32_t x;
		if (r->end - r->p < 4)
			return -1;
		memcpy(&x, r->p, 4);
		f->v = x;
		r->p += 4;
		return 1;
	}
	case PB_LEN: {
		uint64_t len;
		if (pb_read_varint(r, &len) || len > (uint64_t)(r->end - r->p))
			return -1;
		f->data = r->p;
		f->len = (size_t)len;
		r->p += len;
		return 1;
	}
	default:
		return -1; /* groups (3, 4) are not used by helper.proto */
	}
}

void pb_values_init(struct pb_values *it, const struct pb_field *f)
{
	if (f->wire == PB_LEN) {
		it->r = pb_reader(f->data, f->len);
		it->state = 1;
	} else {
		it->single = f->v;
		it->state = 0;
	}
}

int pb_values_next(struct pb_values *it, uint64_t *v)
{
	switch (it->state) {
	case 0:
		*v = it->single;
		it->state = 2;
		return 1;
	case 1:
		if (it->r.p >= it->r.end)
			return 0;
		return pb_read_varint(&it->r, v) ? -1 : 1;
	default:
		return 0;
	}
}
