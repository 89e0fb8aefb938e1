// `window.onair`: a small handle for tests and debugging.
import type Hls from 'hls.js';
import type { LivePlayer, PlayerView } from './player';

export interface OnAirHandle {
  readonly video: HTMLVideoElement;
  /** The current hls.js instance, or null (offline, WebRTC or native HLS). */
  readonly hls: Hls | null;
  /** The current WHEP RTCPeerConnection (also while connecting), or null. */
  readonly pc: RTCPeerConnection | null;
  readonly stream: string;
  readonly player: LivePlayer;
  setTitle?: (text: string) => void;
}

declare global {
  interface Window {
    onair?: OnAirHandle;
  }
}

export function exposeForTests(view: PlayerView, stream: string, extra: { setTitle?: (text: string) => void } = {}): void {
  window.onair = {
    video: view.video,
    get hls() {
      return view.player.hls;
    },
    get pc() {
      return view.player.pc;
    },
    stream,
    player: view.player,
    ...extra,
  };
}
