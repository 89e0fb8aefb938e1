// `window.onair`: a small handle for tests and debugging.
import type Hls from 'hls.js';
import type { LivePlayer, PlayerView } from './player';
import type { GuestChat, GuestChatSnapshot } from './chat';

/** The viewer page's chat, for tests: `enabled` false when the stream has no chat (Matrix not configured). */
export interface ChatHandle {
  readonly enabled: boolean | null;
  readonly client: GuestChat | null;
  /** The guest client's state (status, roomId, userId, messages, …), or null before it starts. */
  readonly state: GuestChatSnapshot | null;
}

export interface OnAirHandle {
  readonly video: HTMLVideoElement;
  /** The current hls.js instance, or null (offline, WebRTC or native HLS). */
  readonly hls: Hls | null;
  /** The current WHEP RTCPeerConnection (also while connecting), or null. */
  readonly pc: RTCPeerConnection | null;
  readonly stream: string;
  readonly player: LivePlayer;
  setTitle?: (text: string) => void;
  chat?: ChatHandle;
}

declare global {
  interface Window {
    onair?: OnAirHandle;
  }
}

export function exposeForTests(view: PlayerView, stream: string, extra: Pick<OnAirHandle, 'setTitle' | 'chat'> = {}): void {
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
