/* CRC-32 (zlib's) by carry-less multiplication: shared by the addon (the stream's frames) and the restorer (the
 * page container's chunks). */
#ifndef GW_CRC32_H
#define GW_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Whether this CPU has what the folding crc32 needs (PCLMULQDQ, SSE4.1); gw_crc32 must not be called otherwise. */
int gw_crc32_accelerated(void);
/* zlib's crc32(previous, p, n): the crc of the bytes so far continued over p[0..n). */
uint32_t gw_crc32(uint32_t previous, const uint8_t *p, size_t n);

#endif
