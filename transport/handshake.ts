/**
 * The version handshake both ends do first. Each writes its preamble and hello at once, then reads the peer's.
 * The sender turns "no hello" into the reason a person can act on: godwit missing on the target, too old to
 * know `receive`, or a different protocol version.
 */
import { GodwitError } from '../util/errors';
import { FrameType, HelloInfo, PROTOCOL_VERSION, ProtocolError, Role } from './frames';
import { Channel, MessageReader, MessageWriter, TailBuffer } from './wire';

export const GODWIT_VERSION: string = require('../../package.json').version;
/** 'reserve': a migration's source waits for the target's Reserved before it freezes (target: it sends one). */
export const CAPABILITIES = ['zstd', 'credit', 'migrate', 'reserve'];
export const INSTALL_HINT = 'install godwit on it (README: "Installing on a target host") or give its path with --godwit-path';

export class HandshakeError extends GodwitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: 'EHANDSHAKE' });
  }
}

export function myHello(role: Role, window?: number): HelloInfo {
  const h: HelloInfo = { protocol: PROTOCOL_VERSION, godwit: GODWIT_VERSION, role, caps: CAPABILITIES };
  if (window !== undefined) h.window = window;
  return h;
}

/** How long to wait for a remote command's exit status once its stdout ended, to explain why. */
const EXIT_GRACE_MS = 2000;

async function explainSilence(channel: Channel, stderr: TailBuffer, cause?: unknown): Promise<HandshakeError> {
  const exit = channel.exited
    ? await Promise.race([channel.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), EXIT_GRACE_MS).unref())])
    : undefined;
  const err = stderr.text;
  const where = channel.label;
  if (exit?.code === 127 || /command not found|No such file or directory|not found/i.test(err)) {
    return new HandshakeError(`godwit: command not found on ${where} — ${INSTALL_HINT}` + (err ? `\n  target said: ${err}` : ''),
      { cause });
  }
  if (/unknown command|unknown option|too many arguments/i.test(err)) {
    return new HandshakeError(
      `godwit on ${where} does not understand \`receive\` (it is older than ${GODWIT_VERSION}, protocol ` +
        `${PROTOCOL_VERSION}) — upgrade it; target said: ${err}`, { cause });
  }
  const status = exit ? (exit.code !== null ? `exited with code ${exit.code}` : `was killed by ${exit.signal}`) : 'closed the connection';
  return new HandshakeError(`godwit receive on ${where} ${status} before the handshake` + (err ? `: ${err}` : ''), { cause });
}

/**
 * Write our hello, read the peer's and check it. For the sender, `window` in the result is the initial credit.
 * The receiver also answers a bad hello with an Error frame so the sender learns why.
 */
export async function handshake(channel: Channel, reader: MessageReader, writer: MessageWriter, role: Role,
  stderr: TailBuffer, window?: number): Promise<HelloInfo> {
  try {
    writer.writePreamble();
    await writer.send({ type: FrameType.Hello, hello: myHello(role, window) });
  } catch (err) {
    // A command that is missing exits at once: the channel may be closed before our hello is out.
    if (role === 'sender') throw await explainSilence(channel, stderr, err);
    throw err;
  }
  let m;
  try {
    m = await reader.next();
  } catch (err) {
    if (role === 'sender' && err instanceof ProtocolError && err.offset === 0) throw await explainSilence(channel, stderr, err);
    throw err;
  }
  if (!m) {
    if (role === 'sender') throw await explainSilence(channel, stderr);
    throw new HandshakeError(`${channel.label} closed the stream before its hello`);
  }
  if (m.type === FrameType.Error) throw new HandshakeError(`${channel.label} refused the stream: ${m.message}`);
  if (m.type !== FrameType.Hello) {
    throw new ProtocolError(channel.label, reader.offset, `expected a hello first, got ${FrameType[m.type]}`);
  }
  const peer = m.hello;
  const expectRole: Role = role === 'sender' ? 'receiver' : 'sender';
  if (peer.role !== expectRole) throw new HandshakeError(`${channel.label} says it is a ${peer.role}, expected a ${expectRole}`);
  if (peer.protocol !== PROTOCOL_VERSION) {
    const msg = role === 'sender'
      ? `godwit on ${channel.label} is ${peer.godwit} (protocol ${peer.protocol}), need protocol ${PROTOCOL_VERSION} ` +
        `(godwit ${GODWIT_VERSION}) — install the same godwit version on both hosts`
      : `the sender's godwit is ${peer.godwit} (protocol ${peer.protocol}), this godwit ${GODWIT_VERSION} speaks protocol ` +
        `${PROTOCOL_VERSION} — install the same godwit version on both hosts`;
    if (role === 'receiver') writer.trySend({ type: FrameType.Error, code: 'EHANDSHAKE', message: msg });
    throw new HandshakeError(msg);
  }
  if (role === 'sender' && peer.window === undefined) {
    throw new HandshakeError(`godwit on ${channel.label} sent no flow-control window in its hello`);
  }
  return peer;
}
