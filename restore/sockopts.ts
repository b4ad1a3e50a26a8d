/**
 * SOL_SOCKET options any socket kind carries in its sk_opts_entry beyond buffers and timeouts (zdtm
 * sock_opts00): set after the socket is bound, connected and refilled, only where they differ from a new
 * socket's defaults.
 */
import { Msg } from './image-files';
import { Batch } from './syscalls';

const SOL_SOCKET = 1;
const SO_DONTROUTE = 5;
const SO_OOBINLINE = 10;
const SO_NO_CHECK = 11;
const SO_PRIORITY = 12;
const SO_PASSCRED = 16;
const SO_RCVLOWAT = 18;
const SO_PASSSEC = 34;
const SO_MARK = 36;

export function addCommonSockOpts(b: Batch, fd: number, o: Msg, name: string): void {
  const set = (opt: number, v: number, what: string) => {
    const val = Buffer.alloc(4);
    val.writeInt32LE(v);
    b.call('setsockopt', [fd, SOL_SOCKET, opt, b.data(val), 4], `${what} of ${name}`);
  };
  if (o.so_priority) set(SO_PRIORITY, Number(o.so_priority), 'SO_PRIORITY');
  if (o.so_mark) set(SO_MARK, Number(o.so_mark), 'SO_MARK');
  if (o.so_rcvlowat && Number(o.so_rcvlowat) !== 1) set(SO_RCVLOWAT, Number(o.so_rcvlowat), 'SO_RCVLOWAT');
  if (o.so_dontroute) set(SO_DONTROUTE, 1, 'SO_DONTROUTE');
  if (o.so_no_check) set(SO_NO_CHECK, 1, 'SO_NO_CHECK');
  if (o.so_oobinline) set(SO_OOBINLINE, 1, 'SO_OOBINLINE');
  if (o.so_passcred) set(SO_PASSCRED, 1, 'SO_PASSCRED');
  if (o.so_passsec) set(SO_PASSSEC, 1, 'SO_PASSSEC');
}
