/* Operations whose modules have not landed yet answer EOPNOTSUPP (replaced by procstate.c, files.c, diag.c). */
#include "helper.h"
int op_dump_process(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out) { (void)req; (void)len; (void)out; return gw_fail(&h->err, EOPNOTSUPP, "dump_process", 0, "not yet"); }
int op_peek_pipe(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out) { (void)req; (void)len; (void)out; return gw_fail(&h->err, EOPNOTSUPP, "peek_pipe", 0, "not yet"); }
int op_peek_socket(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out) { (void)req; (void)len; (void)out; return gw_fail(&h->err, EOPNOTSUPP, "peek_socket", 0, "not yet"); }
int op_sock_opts(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out) { (void)req; (void)len; (void)out; return gw_fail(&h->err, EOPNOTSUPP, "sock_opts", 0, "not yet"); }
int op_unix_diag(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out) { (void)req; (void)len; (void)out; return gw_fail(&h->err, EOPNOTSUPP, "unix_diag", 0, "not yet"); }
