// Viewer page: GET /<stream>
import './style.css';
import {
  describeStream,
  fetchStreamInfo,
  hlsBaseFromPage,
  mountPlayer,
  playerOptionsFromQuery,
  streamFromLocation,
  type PlayerState,
  type PlayerStats,
  type StreamInfo,
} from './player';
import { exposeForTests, type ChatHandle } from './globals';
import { mountGuestChat, type MountedGuestChat } from './chat';

const stream = streamFromLocation();

const titleEl = document.getElementById('stream-title') as HTMLElement;
const statusBadge = document.getElementById('status-badge') as HTMLElement;
const infoEl = document.getElementById('stream-info') as HTMLElement;
const playerEl = document.getElementById('player') as HTMLElement;

/** Set the page heading and the document title (the Matrix room name when known, else the API's title). */
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
  hlsOrigin: hlsBaseFromPage(), // hls.public_base_url: a CDN or caching proxy in front of OnAir
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

// ---------------------------------------------------------------------------
// Title and chat: `/api/streams/<stream>` says whether the stream has a Matrix
// room (`chat`); the guest chat then runs on its own (see chat.ts). The title is
// the room name when the chat knows it, else the API's `title`.

const chatPanel = document.getElementById('chat') as HTMLElement;
const chatBody = document.getElementById('chat-body') as HTMLElement;
let apiTitle = '';
let roomTitle: string | null = null;
let chat: MountedGuestChat | null = null;
let chatEnabled: boolean | null = null;

function showTitle(): void {
  setTitle(roomTitle ?? (apiTitle || stream || 'OnAir'));
}

const chatHandle: ChatHandle = {
  get enabled() {
    return chatEnabled;
  },
  get client() {
    return chat?.client ?? null;
  },
  get state() {
    return chat?.client.snapshot() ?? null;
  },
};

/** Reads the API (title, chat); starts the chat the first time the stream has one. */
async function refreshTitleAndChat(): Promise<boolean> {
  const fresh = await fetchStreamInfo(stream);
  if (!fresh) return false;
  if (typeof fresh.title === 'string') apiTitle = fresh.title.trim();
  showTitle();
  if (!chat && fresh.chat && fresh.chat.homeserver) {
    chatEnabled = true;
    chatPanel.hidden = false;
    chat = mountGuestChat(chatBody, fresh.chat, {
      searchTerm: apiTitle || stream,
      onTitle: (title) => {
        roomTitle = title;
        showTitle();
      },
    });
  } else if (chat && fresh.chat) {
    chat.client.updateEndpoint(fresh.chat, apiTitle || stream);
  } else if (!chat) {
    // No Matrix configured: no chat panel (it appears if Matrix is set up later).
    chatEnabled = false;
    chatPanel.hidden = true;
  }
  return true;
}

async function titleAndChatLoop(): Promise<void> {
  if (!stream) {
    chatPanel.hidden = true;
    return;
  }
  let wait = 1000;
  for (;;) {
    const ok = await refreshTitleAndChat();
    // Quick retries until the API answers once, then a slow refresh (the title
    // set in OnAir while the chat cannot give the room name; chat set up later).
    wait = ok ? 15000 : Math.min(wait * 2, 15000);
    await new Promise((r) => setTimeout(r, wait));
  }
}

void titleAndChatLoop();

exposeForTests(view, stream, { setTitle, chat: chatHandle });
