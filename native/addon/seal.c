/* GcmSeal: the outgoing half of an SSH connection's AES-GCM cipher (RFC 5647, aes128-gcm@openssh.com and
 * aes256-gcm@openssh.com), for ssh2's client (transport/ssh-seal.ts installs it in place of ssh2's own).
 *
 * encrypt() seals one packet ssh2 laid out, in place, as ssh2's binding does. seal() is why this exists: it turns
 * a run of channel data into every SSH_MSG_CHANNEL_DATA packet it makes in one call, each encrypted straight from
 * the caller's bytes into the output (no copy into a packet first), with one CSPRNG call for all their padding. A
 * migration's pages left ssh2 one 32 KiB packet at a time (OpenSSH's packet size for a session channel), a dozen
 * JavaScript calls, a copy and an allocation each: ~0.3 s of the sending process's CPU per 538 MB here.
 *
 * The invocation counter lives in the OpenSSL context (EVP_CTRL_GCM_IV_GEN), so packets from both methods share
 * one sequence, in the order they are sealed. OpenSSL is Node's own (its symbols are resolved in the node binary). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "addon.h"

#define GCM_TAG 16
#define GCM_BLOCK 16
#define GCM_IV 12
#define MSG_CHANNEL_DATA 94
/* Channel data bytes a packet's payload adds: message number, recipient channel, data length. */
#define DATA_HDR 9
/* Largest random padding of a packet: RFC 4253 wants 4 at least, block alignment adds up to 15. */
#define PAD_MAX (4 + GCM_BLOCK - 1)
/* Largest data per packet accepted (OpenSSH offers 32 KiB; RFC 4253 requires 32,768 at least). */
#define MAX_PACKET (1 << 24)

struct seal {
	EVP_CIPHER_CTX *ctx;
};

static void seal_free(struct seal *s)
{
	if (s->ctx) {
		EVP_CIPHER_CTX_free(s->ctx); /* clears the key schedule */
		s->ctx = NULL;
	}
}

static void finalize(napi_env env, void *data, void *hint)
{
	(void)env, (void)hint;
	seal_free(data);
	free(data);
}

/* Padding of a packet whose payload is n bytes: RFC 4253 §6 with RFC 5647's unpadded length field. */
static size_t pad_len(size_t n)
{
	size_t pad = GCM_BLOCK - ((1 + n) & (GCM_BLOCK - 1));
	return pad < 4 ? pad + GCM_BLOCK : pad;
}

/* One packet: length | padding length | payload (head, then body) | padding, encrypted into out (which may be the
 * packet itself), tag after it. Returns 0, or -1 with the OpenSSL call that failed in *what. */
static int seal_one(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len,
		    const uint8_t *pad, size_t pad_n, const char **what)
{
	uint8_t len4[4], last[1];
	int n;
	size_t enc = 1 + head_len + body_len + pad_n;
	len4[0] = (uint8_t)(enc >> 24), len4[1] = (uint8_t)(enc >> 16), len4[2] = (uint8_t)(enc >> 8), len4[3] = (uint8_t)enc;
	memcpy(out, len4, 4);
	uint8_t padbyte = (uint8_t)pad_n;
	uint8_t *p = out + 4;
	if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_IV_GEN, 1, last))
		return *what = "EVP_CTRL_GCM_IV_GEN", -1;
	/* The length is authenticated, not encrypted. */
	if (!EVP_EncryptUpdate(ctx, NULL, &n, len4, 4))
		return *what = "EVP_EncryptUpdate(aad)", -1;
	if (!EVP_EncryptUpdate(ctx, p, &n, &padbyte, 1))
		return *what = "EVP_EncryptUpdate", -1;
	p += n;
	if (head_len && !EVP_EncryptUpdate(ctx, p, &n, head, (int)head_len))
		return *what = "EVP_EncryptUpdate", -1;
	p += head_len ? n : 0;
	if (body_len && !EVP_EncryptUpdate(ctx, p, &n, body, (int)body_len))
		return *what = "EVP_EncryptUpdate", -1;
	p += body_len ? n : 0;
	if (!EVP_EncryptUpdate(ctx, p, &n, pad, (int)pad_n))
		return *what = "EVP_EncryptUpdate", -1;
	p += n;
	if (!EVP_EncryptFinal_ex(ctx, p, &n))
		return *what = "EVP_EncryptFinal_ex", -1;
	p += n;
	if ((size_t)(p - out) != 4 + enc)
		return *what = "EVP_EncryptUpdate(length)", -1;
	if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, GCM_TAG, p))
		return *what = "EVP_CTRL_AEAD_GET_TAG", -1;
	return 0;
}

static struct seal *this_seal(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
	napi_value self;
	struct seal *s = NULL;
	if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok || napi_unwrap(env, self, (void **)&s) != napi_ok || !s) {
		napi_throw_type_error(env, NULL, "not a GcmSeal");
		return NULL;
	}
	if (!s->ctx) {
		gw_throw_sys(env, EBADF, "GcmSeal", "GcmSeal used after free()", NULL, 0);
		return NULL;
	}
	return s;
}

/* new GcmSeal(key: 16 or 32 bytes, iv: 12 bytes) */
static napi_value seal_new(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], self;
	uint8_t *key, *iv;
	size_t key_len, iv_len;
	if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok || argc < 2 || !gw_bytes_arg(env, argv[0], &key, &key_len) ||
	    !gw_bytes_arg(env, argv[1], &iv, &iv_len) || (key_len != 16 && key_len != 32) || iv_len != GCM_IV) {
		napi_throw_type_error(env, NULL, "new GcmSeal(key: 16 or 32 bytes, iv: 12 bytes)");
		return NULL;
	}
	struct seal *s = calloc(1, sizeof *s);
	if (!s)
		return gw_throw_sys(env, ENOMEM, "calloc", "GcmSeal: out of memory", NULL, 0);
	const char *what = NULL;
	s->ctx = EVP_CIPHER_CTX_new();
	if (!s->ctx)
		what = "EVP_CIPHER_CTX_new";
	else if (!EVP_EncryptInit_ex(s->ctx, key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), NULL, NULL, NULL))
		what = "EVP_EncryptInit_ex";
	else if (!EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_IVLEN, GCM_IV, NULL))
		what = "EVP_CTRL_AEAD_SET_IVLEN";
	else if (!EVP_EncryptInit_ex(s->ctx, NULL, NULL, key, iv))
		what = "EVP_EncryptInit_ex(key)";
	/* The whole IV is fixed field plus invocation counter: IV_GEN then counts packets (RFC 5647 §7.1). */
	else if (!EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv))
		what = "EVP_CTRL_GCM_SET_IV_FIXED";
	if (what || napi_wrap(env, self, s, finalize, NULL, NULL) != napi_ok) {
		finalize(env, s, NULL);
		return gw_throw_sys(env, what ? EINVAL : ENOMEM, what ? what : "napi_wrap", "GcmSeal: cannot set up the AES-GCM context", NULL, 0);
	}
	return self;
}

/* encrypt(packet): packet = length | padding length | payload | padding | 16 bytes for the tag, sealed in place. */
static napi_value seal_encrypt(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	uint8_t *pkt;
	size_t len;
	struct seal *s = this_seal(env, info, &argc, argv);
	if (!s)
		return NULL;
	if (argc < 1 || !gw_bytes_arg(env, argv[0], &pkt, &len) || len < 4 + 1 + 4 + GCM_TAG) {
		napi_throw_type_error(env, NULL, "encrypt(packet: Uint8Array)");
		return NULL;
	}
	size_t enc = (size_t)pkt[0] << 24 | (size_t)pkt[1] << 16 | (size_t)pkt[2] << 8 | pkt[3];
	size_t pad_n = pkt[4];
	if (enc != len - 4 - GCM_TAG || enc % GCM_BLOCK || pad_n < 4 || pad_n + 1 > enc)
		return gw_throw_sys(env, EINVAL, "GcmSeal.encrypt", "packet is not laid out for AES-GCM (length, padding, tag room)", NULL, 0);
	/* In place: the body is the payload, then the padding as the packet holds it. */
	const char *what = NULL;
	if (seal_one(s->ctx, pkt, NULL, 0, pkt + 5, enc - 1 - pad_n, pkt + 4 + enc - pad_n, pad_n, &what))
		return gw_throw_sys(env, EIO, what, "GcmSeal.encrypt: OpenSSL failed", NULL, 0);
	return NULL;
}

/* sealedSize(dataLen, packetSize) -> bytes seal() writes for that much channel data. */
static size_t sealed_size(size_t data_len, size_t packet_size)
{
	size_t total = 0;
	while (data_len) {
		size_t n = data_len < packet_size ? data_len : packet_size;
		total += 4 + 1 + DATA_HDR + n + pad_len(DATA_HDR + n) + GCM_TAG;
		data_len -= n;
	}
	return total;
}

/* A packet size argument: 1..MAX_PACKET data bytes. */
static bool packet_size_arg(napi_env env, napi_value v, size_t *packet_size)
{
	int64_t n;
	if (napi_get_value_int64(env, v, &n) != napi_ok || n < 1 || n > MAX_PACKET)
		return false;
	*packet_size = (size_t)n;
	return true;
}

static bool size_args(napi_env env, napi_value a, napi_value b, size_t *data_len, size_t *packet_size)
{
	int64_t u;
	if (napi_get_value_int64(env, a, &u) != napi_ok || u < 0 || !packet_size_arg(env, b, packet_size))
		return false;
	*data_len = (size_t)u;
	return true;
}

static napi_value seal_sealed_size(napi_env env, napi_callback_info info)
{
	size_t argc = 2, data_len, packet_size;
	napi_value argv[2], r;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !size_args(env, argv[0], argv[1], &data_len, &packet_size)) {
		napi_throw_type_error(env, NULL, "sealedSize(dataLength, packetSize)");
		return NULL;
	}
	napi_create_double(env, (double)sealed_size(data_len, packet_size), &r);
	return r;
}

/* seal(recipient, data, packetSize, out) -> packets: data cut into SSH_MSG_CHANNEL_DATA packets of at most
 * packetSize data bytes each, sealed one after another into out (at least sealedSize(data.length, packetSize)). */
static napi_value seal_seal(napi_env env, napi_callback_info info)
{
	size_t argc = 4, data_len, out_len, packet_size;
	napi_value argv[4], r;
	uint8_t *data, *out;
	uint32_t recipient;
	struct seal *s = this_seal(env, info, &argc, argv);
	if (!s)
		return NULL;
	if (argc < 4 || napi_get_value_uint32(env, argv[0], &recipient) != napi_ok || !gw_bytes_arg(env, argv[1], &data, &data_len) ||
	    !gw_bytes_arg(env, argv[3], &out, &out_len)) {
		napi_throw_type_error(env, NULL, "seal(recipient, data: Uint8Array, packetSize, out: Uint8Array)");
		return NULL;
	}
	if (!packet_size_arg(env, argv[2], &packet_size)) {
		napi_throw_range_error(env, NULL, "seal: packetSize out of 1..16 MiB");
		return NULL;
	}
	size_t packets = (data_len + packet_size - 1) / packet_size;
	if (packets > INT_MAX / PAD_MAX)
		return gw_throw_sys(env, ERANGE, "GcmSeal.seal", "seal: too many packets for one call", NULL, 0);
	if (out_len < sealed_size(data_len, packet_size))
		return gw_throw_sys(env, ENOBUFS, "GcmSeal.seal", "seal: out is smaller than sealedSize(data.length, packetSize)", NULL, 0);
	/* Padding of every packet from one CSPRNG call (what ssh2 did with one call per packet). */
	uint8_t stack_pad[64 * PAD_MAX];
	uint8_t *pad = packets <= 64 ? stack_pad : malloc(packets * PAD_MAX);
	if (!pad)
		return gw_throw_sys(env, ENOMEM, "malloc", "seal: out of memory", NULL, 0);
	const char *what = NULL;
	if (packets && RAND_bytes(pad, (int)(packets * PAD_MAX)) != 1)
		what = "RAND_bytes";
	uint8_t *o = out, head[DATA_HDR];
	head[0] = MSG_CHANNEL_DATA;
	head[1] = (uint8_t)(recipient >> 24), head[2] = (uint8_t)(recipient >> 16), head[3] = (uint8_t)(recipient >> 8), head[4] = (uint8_t)recipient;
	for (size_t i = 0, at = 0; !what && i < packets; i++) {
		size_t n = data_len - at < packet_size ? data_len - at : packet_size;
		size_t pad_n = pad_len(DATA_HDR + n);
		head[5] = (uint8_t)(n >> 24), head[6] = (uint8_t)(n >> 16), head[7] = (uint8_t)(n >> 8), head[8] = (uint8_t)n;
		if (seal_one(s->ctx, o, head, DATA_HDR, data + at, n, pad + i * PAD_MAX, pad_n, &what))
			break;
		o += 4 + 1 + DATA_HDR + n + pad_n + GCM_TAG;
		at += n;
	}
	if (pad != stack_pad)
		free(pad);
	if (what)
		return gw_throw_sys(env, EIO, what, "GcmSeal.seal: OpenSSL failed", NULL, 0);
	napi_create_double(env, (double)(o - out), &r);
	return r;
}

static napi_value seal_free_js(napi_env env, napi_callback_info info)
{
	napi_value self;
	struct seal *s = NULL;
	if (napi_get_cb_info(env, info, NULL, NULL, &self, NULL) == napi_ok && napi_unwrap(env, self, (void **)&s) == napi_ok && s)
		seal_free(s);
	return NULL;
}

napi_value gw_seal_class(napi_env env)
{
	napi_property_descriptor methods[] = {
		{ "encrypt", NULL, seal_encrypt, NULL, NULL, NULL, napi_default, NULL },
		{ "seal", NULL, seal_seal, NULL, NULL, NULL, napi_default, NULL },
		{ "free", NULL, seal_free_js, NULL, NULL, NULL, napi_default, NULL },
		{ "sealedSize", NULL, seal_sealed_size, NULL, NULL, NULL, napi_static, NULL },
	};
	napi_value cls;
	if (napi_define_class(env, "GcmSeal", NAPI_AUTO_LENGTH, seal_new, NULL, sizeof(methods) / sizeof(methods[0]), methods, &cls) != napi_ok)
		return NULL;
	return cls;
}
