// Viewer page: GET /<stream>
import './style.css';
import {
  describeStream,
  fetchStreamInfo,
  mountPlayer,
  playerOptionsFromQuery,
  streamFromLocation,
  type PlayerState,
  type PlayerStats,
  type StreamInfo,
} from './player';
import { exposeForTests } from './globals';

const stream = streamFromLocation();

const titleEl = document.getElementById('stream-title') as HTMLElement;
const statusBadge = document.getElementById('status-badge') as HTMLElement;
const infoEl = document.getElementById('stream-info') as HTMLElement;
const playerEl = document.getElementById('player') as HTMLElement;

/** Set the page heading and the document title (later: the Matrix room name). */
export function setTitle(text: string): void {
  titleEl.textContent = text;
  titleEl.title = text;
  document.title = text || 'OnAir';
}

setTitle(stream || 'OnAir');

let info: StreamInfo | null = null;
let lastStats: PlayerStats | null = null;
let infoTimer: ReturnType<typeof setInterval> | null = null;

function renderInfo(): void {
  infoEl.textContent = describeStream(info, lastStats ?? undefined);
}

async function refreshInfo(): Promise<void> {
  if (!stream) return;
  const fresh = await fetchStreamInfo(stream);
  if (document.body.dataset.state !== 'playing') return;
  info = fresh && fresh.live !== false ? fresh : null;
  renderInfo();
}

function renderStatus(state: PlayerState): void {
  const labels: Record<PlayerState, string> = {
    playing: 'LIVE',
    loading: 'CONNECTING',
    offline: 'OFFLINE',
    error: 'ERROR',
  };
  statusBadge.textContent = labels[state];
  statusBadge.dataset.state = state;
  statusBadge.classList.toggle('is-live', state === 'playing');
}

document.body.dataset.state = 'loading';
renderStatus('loading');

const view = mountPlayer(playerEl, {
  stream,
  ...playerOptionsFromQuery(), // ?transport=hls|webrtc, ?ice-timeout=<ms>
  onStateChange: (state) => {
    document.body.dataset.state = state;
    renderStatus(state);
    if (state === 'playing') {
      if (infoTimer === null) {
        void refreshInfo();
        infoTimer = setInterval(() => void refreshInfo(), 10000);
      }
    } else {
      if (infoTimer !== null) clearInterval(infoTimer);
      infoTimer = null;
      info = null;
      lastStats = null;
      renderInfo();
    }
  },
  onTransportChange: (t) => {
    document.body.dataset.transport = t;
  },
  onStats: (stats) => {
    lastStats = stats;
    if (!info?.video?.width) renderInfo();
  },
});

exposeForTests(view, stream, { setTitle });
