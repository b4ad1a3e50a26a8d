/**
 * An idle watchdog on the bytes from the peer. A connection whose link is cut (packets dropped, no reset) looks
 * exactly like a quiet peer to the side that only reads: without a limit, a migrate target would wait forever
 * holding half-received images. When nothing arrives for `ms` while the watchdog runs, the input ends with an
 * error, and the receiver takes its normal failure path (removes what it wrote, kills a held tree).
 */
import { Transform } from 'node:stream';
import type { Channel } from '../transport/wire';
import { ConnectionLostError } from '../transport/wire';

export interface IdleWatch {
  channel: Channel;
  /** Stop counting (this side is busy and the peer waits for it). */
  pause(): void;
  /** Count again from now. */
  resume(): void;
  /** Done: never fires again. */
  stop(): void;
}

export function watchIdle(inner: Channel, ms: number): IdleWatch {
  let timer: NodeJS.Timeout | undefined;
  let running = true;
  let stopped = false;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      arm();
      cb(null, chunk);
    },
  });
  const fire = () => {
    timer = undefined;
    if (!running || stopped) return;
    tap.destroy(new ConnectionLostError(`nothing came from ${inner.label} for ${Math.round(ms / 1000)} s: ` +
      'the connection is taken as lost'));
    inner.close();
  };
  function arm(): void {
    if (!running || stopped) return;
    clearTimeout(timer);
    timer = setTimeout(fire, ms);
    timer.unref();
  }
  inner.fromPeer.on('error', (err) => tap.destroy(err));
  // Through the native frame pump most bytes never reach the tap: its reads count as well.
  inner.pipe?.on('bytes', arm);
  inner.fromPeer.pipe(tap);
  arm();
  return {
    channel: { ...inner, fromPeer: tap },
    pause() {
      running = false;
      clearTimeout(timer);
    },
    resume() {
      running = true;
      arm();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
