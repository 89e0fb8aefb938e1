// Live chat: a DOM view (`ChatView`) and a Matrix guest client (`GuestChat`)
// that needs nothing but the browser and the Matrix client-server API v3.
//
// The view knows nothing about Matrix: it takes messages and statuses and hands
// back what the user typed through callbacks, so the desktop window can feed it
// from another source. `mountGuestChat()` wires the two together for the
// viewer page.
//
// How the guest client works (see docs/chat.md):
//   1. A guest account (`POST /register?kind=guest`), kept in localStorage per
//      homeserver and reused on the next visit (checked with `/account/whoami`;
//      a dead token is replaced by a new guest).
//   2. The room: the id OnAir knows, else the alias (`GET /directory/room/…`),
//      else the public room directory searched by the stream's title.
//   3. Unjoined reading (world-readable rooms), by long-polling: first a stream
//      token for "now" (`GET /events?room_id=…&timeout=0`: guests may "peek" at
//      one world-readable room through `/events` without joining), then the
//      newest messages (`/messages?dir=b`) and the title (`m.room.name`), then
//      `GET /events?room_id=…&from=<token>&timeout=30000` over and over: the
//      homeserver answers as soon as something happens in the room (or after
//      30 s with nothing), and its `end` is the next `from`. Taking the token
//      before reading the history means nothing sent in between is lost; what
//      shows up twice is dropped by event id. Title changes come the same way.
//      At most 5 long-polls start in any 5 s (a busy room: one request a second,
//      as polling did). `/events` has no lazy-loaded members: the name of a
//      sender not met yet is read from the room state.
//      A homeserver that refuses `/events` (400/404/405/501, `M_UNRECOGNIZED`)
//      gets the old way: polling `/messages?dir=f` once a second from the
//      history's token. `/sync` would only cover joined rooms, and most viewers
//      never write. `stop()` (page unload) aborts the waiting request; a page
//      going into the back/forward cache aborts it and picks up from the same
//      token when it comes back.
//   4. Sending joins the room as a guest first (once), then
//      `PUT /rooms/{id}/send/m.room.message/{txnId}`.
//   Rate limiting (429) is waited out (`retry_after_ms`); network failures show
//   "cannot be reached" and are retried with backoff (the first request after a
//   failure does not wait: `timeout=0`, so recovery shows at once); a
//   homeserver that refuses guests says so.
//
// The decisions without DOM or network (follow mode and tokens, the long-poll
// budget, de-duplication by event id, the title, retry delays, whether the list
// follows new messages) are in chat-state.ts.

import {
  FollowState,
  TitleState,
  chatRetryDelayMs,
  followsNew,
  historyInsertIndex,
  longPollWaitMs,
  nearBottom,
  rateLimitDelayMs,
  refusesEvents,
  roomNameOf,
  titleChangeLine,
  type ChatFailure,
  type FollowMode,
} from './chat-state';

import type { ChatInfo } from './api/ChatInfo';

// ---------------------------------------------------------------------------
// The view

export interface ChatMessage {
  /** Event id (or a local id while a sent message is on its way). */
  id: string;
  /** Sender's user id. */
  sender: string;
  /** What to show as the sender. */
  senderName: string;
  /** Plain text; always rendered as text, never as HTML. */
  body: string;
  /** Milliseconds since the epoch. */
  ts: number;
  /** `event`: a line about the room itself (e.g. the title changed). Default `text`. */
  kind?: 'text' | 'notice' | 'emote' | 'event';
  /** Sent by this page's user. */
  own?: boolean;
  /** Sent, not yet confirmed by the server. */
  pending?: boolean;
}

/** `info`: neutral (connecting…), `warn`: degraded, `error`: chat unusable. */
export type ChatStatusKind = 'info' | 'warn' | 'error';

export interface ChatViewOptions {
  /** Called with the trimmed text; a rejection puts the text back and shows the error. */
  onSend?: (text: string) => Promise<void> | void;
  /** Called with the new display name; a rejection shows the error. */
  onRename?: (name: string) => Promise<void> | void;
  /** The "Open in your Matrix app" link (matrix.to), or null for none. */
  nativeLink?: string | null;
  /** Most messages kept in the list (the oldest go first). Default 500. */
  maxMessages?: number;
}

/** The chat panel's DOM: message list, composer, display-name picker, status line, native link. */
export class ChatView {
  readonly root: HTMLElement;
  private readonly opts: ChatViewOptions;
  private readonly statusEl: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly jump: HTMLButtonElement;
  private readonly form: HTMLFormElement;
  private readonly input: HTMLInputElement;
  private readonly sendBtn: HTMLButtonElement;
  private readonly nameBtn: HTMLButtonElement;
  private readonly nameForm: HTMLFormElement;
  private readonly nameInput: HTMLInputElement;
  private readonly link: HTMLAnchorElement;
  private readonly items = new Map<string, { li: HTMLLIElement; msg: ChatMessage }>();
  private currentName = '';
  private disabled = false;

  constructor(container: HTMLElement, opts: ChatViewOptions = {}) {
    this.opts = opts;
    container.replaceChildren();
    container.classList.add('chat-live');
    this.root = container;

    this.statusEl = el('p', 'chat-status');
    this.statusEl.setAttribute('role', 'status');
    this.statusEl.hidden = true;

    this.list = el('ol', 'chat-messages');
    this.list.setAttribute('role', 'log');
    this.list.setAttribute('aria-live', 'polite');
    this.list.tabIndex = 0;
    this.list.addEventListener('scroll', () => {
      if (this.atBottom()) this.jump.hidden = true;
    });

    this.jump = el('button', 'chat-jump');
    this.jump.type = 'button';
    this.jump.textContent = 'New messages ↓';
    this.jump.hidden = true;
    this.jump.addEventListener('click', () => this.scrollToBottom());

    // Display-name picker: "Chatting as Guest 12 ✎" → an inline field.
    const who = el('div', 'chat-who');
    this.nameBtn = el('button', 'chat-name');
    this.nameBtn.type = 'button';
    this.nameBtn.title = 'Change your display name';
    this.nameBtn.addEventListener('click', () => this.openNamePicker());
    this.nameForm = el('form', 'chat-name-form');
    this.nameForm.hidden = true;
    this.nameInput = el('input', 'chat-name-input');
    this.nameInput.type = 'text';
    this.nameInput.maxLength = 64;
    this.nameInput.placeholder = 'Your name';
    this.nameInput.setAttribute('aria-label', 'Display name');
    this.nameInput.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.closeNamePicker();
    });
    const nameSave = el('button', 'chat-name-save');
    nameSave.type = 'submit';
    nameSave.textContent = 'Save';
    this.nameForm.append(this.nameInput, nameSave);
    this.nameForm.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submitName();
    });
    who.append(this.nameBtn, this.nameForm);

    this.form = el('form', 'chat-form');
    this.input = el('input', 'chat-input');
    this.input.type = 'text';
    this.input.maxLength = 2000;
    this.input.placeholder = 'Say something…';
    this.input.autocomplete = 'off';
    this.input.setAttribute('aria-label', 'Message');
    this.sendBtn = el('button', 'chat-send');
    this.sendBtn.type = 'submit';
    this.sendBtn.textContent = 'Send';
    this.form.append(this.input, this.sendBtn);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submitMessage();
    });

    this.link = el('a', 'chat-native');
    this.link.target = '_blank';
    this.link.rel = 'noopener noreferrer';
    this.link.textContent = 'Open in your Matrix app';
    this.setNativeLink(opts.nativeLink ?? null);

    const composer = el('div', 'chat-composer');
    composer.append(who, this.form, this.link);
    const listWrap = el('div', 'chat-list-wrap');
    listWrap.append(this.list, this.jump);
    container.append(this.statusEl, listWrap, composer);
    this.setName('');
  }

  /**
   * Adds messages in order (older ones go before newer ones by timestamp when
   * `history` is set; live ones are appended). A message whose id is already
   * shown replaces it. Follows the bottom unless the reader scrolled up.
   */
  addMessages(msgs: ChatMessage[], opts: { history?: boolean } = {}): void {
    if (msgs.length === 0) return;
    const stick = followsNew(this.atBottom(), msgs);
    for (const msg of msgs) {
      const known = this.items.get(msg.id);
      if (known) {
        this.render(known.li, msg);
        known.msg = msg;
        continue;
      }
      const li = el('li', 'chat-msg');
      this.render(li, msg);
      this.items.set(msg.id, { li, msg });
      if (opts.history) {
        // History goes before the first message that is newer.
        const shown = Array.from(this.list.children) as HTMLLIElement[];
        const ts = shown.map((other) => this.items.get(other.dataset.id ?? '')?.msg.ts ?? -Infinity);
        this.list.insertBefore(li, shown[historyInsertIndex(ts, msg.ts)] ?? null);
      } else {
        this.list.append(li);
      }
    }
    const max = this.opts.maxMessages ?? 500;
    while (this.list.children.length > max) {
      const first = this.list.firstElementChild as HTMLLIElement;
      this.items.delete(first.dataset.id ?? '');
      first.remove();
    }
    if (stick) this.scrollToBottom();
    else this.jump.hidden = false;
  }

  /** Changes a shown message (e.g. pending → sent with its event id, or an edit). */
  updateMessage(id: string, patch: Partial<ChatMessage>): void {
    const known = this.items.get(id);
    if (!known) return;
    const msg = { ...known.msg, ...patch };
    this.items.delete(id);
    this.items.set(msg.id, { li: known.li, msg });
    this.render(known.li, msg);
  }

  removeMessage(id: string): void {
    const known = this.items.get(id);
    if (!known) return;
    known.li.remove();
    this.items.delete(id);
  }

  /** Shows a new display name on every message of `sender`. */
  renameSender(sender: string, name: string): void {
    for (const item of this.items.values()) {
      if (item.msg.sender === sender && item.msg.kind !== 'event') {
        item.msg = { ...item.msg, senderName: name };
        this.render(item.li, item.msg);
      }
    }
  }

  clear(): void {
    this.items.clear();
    this.list.replaceChildren();
    this.jump.hidden = true;
  }

  /** The status/notice line above the messages; an empty text hides it. */
  setStatus(text: string, kind: ChatStatusKind = 'info'): void {
    this.statusEl.textContent = text;
    this.statusEl.dataset.kind = kind;
    this.statusEl.hidden = text === '';
  }

  /** Disables the composer (and the name picker); `reason` becomes the input's placeholder. */
  setDisabled(disabled: boolean, reason = ''): void {
    this.disabled = disabled;
    this.input.disabled = disabled;
    this.sendBtn.disabled = disabled;
    this.nameBtn.disabled = disabled;
    this.input.placeholder = disabled ? reason || 'Chat unavailable' : 'Say something…';
    if (disabled) this.closeNamePicker();
  }

  /** The current display name shown in the picker ('' hides the picker). */
  setName(name: string): void {
    this.currentName = name;
    this.nameBtn.replaceChildren();
    const label = el('span', 'chat-name-label');
    label.textContent = 'Chatting as ';
    const strong = el('strong', 'chat-name-value');
    strong.textContent = name;
    const pen = el('span', 'chat-name-edit');
    pen.setAttribute('aria-hidden', 'true');
    pen.textContent = '✎';
    this.nameBtn.append(label, strong, pen);
    this.nameBtn.hidden = name === '' || !this.nameForm.hidden;
  }

  setNativeLink(url: string | null): void {
    if (url) this.link.href = url;
    else this.link.removeAttribute('href');
    this.link.hidden = !url;
  }

  /** Whether the reader is at (or near) the bottom of the list. */
  atBottom(): boolean {
    return nearBottom(this.list);
  }

  scrollToBottom(): void {
    this.list.scrollTop = this.list.scrollHeight;
    this.jump.hidden = true;
  }

  private render(li: HTMLLIElement, msg: ChatMessage): void {
    li.dataset.id = msg.id;
    li.dataset.sender = msg.sender;
    li.dataset.kind = msg.kind ?? 'text';
    li.classList.toggle('is-own', !!msg.own);
    li.classList.toggle('is-pending', !!msg.pending);
    const time = el('time', 'chat-time');
    const d = new Date(msg.ts);
    time.dateTime = d.toISOString();
    time.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    time.title = d.toLocaleString();
    const body = el('span', 'chat-text');
    if (msg.kind === 'event') {
      body.textContent = msg.body;
      li.replaceChildren(time, body);
      return;
    }
    const who = el('span', 'chat-sender');
    who.textContent = msg.senderName;
    who.title = msg.sender;
    who.style.setProperty('--sender-hue', String(hue(msg.sender)));
    body.textContent = msg.kind === 'emote' ? `* ${msg.senderName} ${msg.body}` : msg.body;
    if (msg.kind === 'emote') li.replaceChildren(time, body);
    else li.replaceChildren(time, who, body);
  }

  private async submitMessage(): Promise<void> {
    const text = this.input.value.trim();
    if (!text || this.disabled) return;
    this.input.value = '';
    try {
      await this.opts.onSend?.(text);
    } catch (e) {
      if (this.input.value === '') this.input.value = text;
      this.setStatus(`Not sent: ${errorText(e)}`, 'warn');
    }
  }

  private openNamePicker(): void {
    if (this.disabled) return;
    this.nameInput.value = this.currentName;
    this.nameForm.hidden = false;
    this.nameBtn.hidden = true;
    this.nameInput.focus();
    this.nameInput.select();
  }

  private closeNamePicker(): void {
    this.nameForm.hidden = true;
    this.nameBtn.hidden = this.currentName === '';
  }

  private async submitName(): Promise<void> {
    const name = this.nameInput.value.trim();
    this.closeNamePicker();
    if (!name || name === this.currentName) return;
    const before = this.currentName;
    this.setName(name);
    try {
      await this.opts.onRename?.(name);
    } catch (e) {
      this.setName(before);
      this.setStatus(`Name not changed: ${errorText(e)}`, 'warn');
    }
  }
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  return e;
}

/** A stable colour per sender. */
function hue(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 360;
  return h;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------
// The Matrix guest client

/** Where the chat of a stream lives (the `chat` field of `/api/streams/<stream>`, the engine's
 * `ChatInfo`): the homeserver, and the room's alias and id when known. */
export type ChatEndpoint = Pick<ChatInfo, 'homeserver'> & Partial<ChatInfo>;

/**
 * `connecting`: starting; `ready`: reading (and writing); `unreachable`: the
 * homeserver does not answer (retrying); `guests-forbidden`: it refuses guest
 * accounts; `no-room`: the room was not found (retrying); `error`: anything else
 * (retrying).
 */
export type GuestChatStatus = 'connecting' | 'ready' | 'unreachable' | 'guests-forbidden' | 'no-room' | 'error';

export interface GuestChatCallbacks {
  onStatus?: (status: GuestChatStatus, text: string) => void;
  /** New messages, in order; `history` for the first read (older messages). */
  onMessages?: (msgs: ChatMessage[], history: boolean) => void;
  /** A shown message changed (its id, an edit, no longer pending). */
  onUpdate?: (id: string, patch: Partial<ChatMessage>) => void;
  onRemove?: (id: string) => void;
  /** A member's display name changed. */
  onMemberName?: (userId: string, name: string) => void;
  /** The room name (`m.room.name`); null when the room has none. */
  onTitle?: (title: string | null) => void;
  /** Our guest account and display name. */
  onIdentity?: (userId: string, displayName: string) => void;
}

export interface GuestChatOptions extends GuestChatCallbacks {
  /** Searched in the public room directory when the alias does not resolve. */
  searchTerm?: string;
  /** Poll interval of the `/messages` fallback (a homeserver without `/events`), ms (default 1000). */
  pollMs?: number;
  /** How long one `/events` long-poll waits on the homeserver, ms (default 30000). */
  longPollMs?: number;
  /** Storage for the guest session (default `window.localStorage`). */
  storage?: Storage | null;
}

/** What tests and debugging see (`window.onair.chat`). */
export interface GuestChatSnapshot {
  status: GuestChatStatus;
  statusText: string;
  homeserver: string;
  alias: string | null;
  roomId: string | null;
  /** How the room was found: OnAir's `room_id`, the alias, or the directory search. */
  resolvedBy: 'room_id' | 'alias' | 'directory' | null;
  userId: string | null;
  displayName: string;
  /** Whether this guest reused a stored session. */
  reusedSession: boolean;
  joined: boolean;
  title: string | null;
  messages: { id: string; sender: string; senderName: string; body: string; ts: number; kind: string }[];
  /** How new events are followed, and how often the homeserver was asked (counters since `start()`). */
  follow: GuestChatFollow;
}

/**
 * `events`: long-polling `/events` (the normal way); `messages`: polling
 * `/messages?dir=f` once a second (the homeserver refuses `/events`); null: not
 * following yet.
 */
export interface GuestChatFollow {
  mode: FollowMode;
  /** `/events` requests (token reads, quick checks and long-polls). */
  eventRequests: number;
  /** `/events` requests that waited on the homeserver (`timeout` > 0). */
  longPolls: number;
  /** `/messages?dir=f` polls (the fallback). */
  messagePolls: number;
  /** A follow request is waiting for the homeserver right now. */
  inFlight: boolean;
}

interface GuestSession {
  userId: string;
  accessToken: string;
  deviceId?: string;
  /** The name this guest picked (or was given). */
  displayName?: string;
  /** Rooms this guest joined. */
  joined?: string[];
}

interface MatrixEvent {
  type: string;
  event_id?: string;
  room_id?: string;
  sender?: string;
  state_key?: string;
  origin_server_ts?: number;
  redacts?: string;
  content?: Record<string, unknown>;
}

/** The homeserver answered with an error. */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
  ) {
    super(message);
  }
}

/** The homeserver did not answer (network error, refused, timeout). */
export class Unreachable extends Error {}

/** The request was aborted on purpose (`stop()`, the page going into the back/forward cache). */
class Aborted extends Error {}

class NoRoom extends Error {}

/** The homeserver refuses guest accounts (Synapse: 403 "Guest access is disabled"). */
class GuestsForbidden extends Error {}

const DEFAULT_POLL_MS = 1000;
const DEFAULT_LONG_POLL_MS = 30000;
/** On top of the long-poll's own wait (Synapse adds up to 10 % at random). */
const LONG_POLL_SLACK_MS = 15000;
/** At most this many senders' names are looked up per batch of new events. */
const MAX_NAME_LOOKUPS = 10;
const REQUEST_TIMEOUT_MS = 10000;
const HISTORY_LIMIT = 50;
const MAX_KEPT = 500;
/** Only the events the chat shows; members come as lazy-loaded state. */
const EVENT_FILTER = JSON.stringify({
  lazy_load_members: true,
  types: ['m.room.message', 'm.room.name', 'm.room.member', 'm.room.redaction'],
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The homeserver does not do `/events` (for us): see refusesEvents(). */
function eventsRefusal(e: unknown): boolean {
  return e instanceof MatrixError && refusesEvents(e.status, e.errcode);
}

/** `localStorage` key of the guest session for a homeserver. */
export function guestStorageKey(homeserver: string): string {
  return `onair-matrix-guest:${normalizeBase(homeserver)}`;
}

function normalizeBase(url: string): string {
  return url.trim().replace(/\/+$/, '');
}

/** `https://matrix.to/#/<alias or room id>`: opens the room in the user's own Matrix app. */
export function matrixToLink(aliasOrRoomId: string, via?: string): string {
  const q = via && aliasOrRoomId.startsWith('!') ? `?via=${encodeURIComponent(via)}` : '';
  return `https://matrix.to/#/${encodeURIComponent(aliasOrRoomId)}${q}`;
}

function serverOf(id: string): string {
  const i = id.indexOf(':');
  return i >= 0 ? id.slice(i + 1) : '';
}

function localpart(userId: string): string {
  const i = userId.indexOf(':');
  return userId.slice(userId.startsWith('@') ? 1 : 0, i >= 0 ? i : undefined);
}

/** The Matrix side of the viewer's chat, as a guest. Call `start()`, then `stop()` when done. */
export class GuestChat {
  readonly homeserver: string;
  private readonly endpoint: ChatEndpoint;
  private readonly opts: GuestChatOptions;
  private readonly storage: Storage | null;
  private session: GuestSession | null = null;
  private reusedSession = false;
  private roomId: string | null = null;
  private via: string[] = [];
  private resolvedBy: GuestChatSnapshot['resolvedBy'] = null;
  /** Mode, tokens, long-poll budget and the event ids shown already. */
  private readonly follow = new FollowState();
  private readonly counts = { eventRequests: 0, longPolls: 0, messagePolls: 0 };
  /** The follow request waiting on the homeserver (aborted by `stop()` and `freeze()`). */
  private followCtrl: AbortController | null = null;
  /** Aborts every request on `stop()`. */
  private readonly stopCtrl = new AbortController();
  private frozen = false;
  private thawed: (() => void) | null = null;
  private readonly titles = new TitleState();
  private status: GuestChatStatus = 'connecting';
  private statusText = 'Connecting to chat…';
  private stopped = false;
  private started = false;
  private ready = false;
  private joinPromise: Promise<void> | null = null;
  private readonly names = new Map<string, string>();
  private readonly messages: ChatMessage[] = [];
  private txn = 0;
  private wake: (() => void) | null = null;

  constructor(endpoint: ChatEndpoint, opts: GuestChatOptions = {}) {
    this.endpoint = { ...endpoint };
    this.homeserver = normalizeBase(endpoint.homeserver);
    this.opts = { ...opts };
    this.storage = opts.storage === undefined ? safeLocalStorage() : opts.storage;
  }

  /** Starts in the background: sign in as a guest, find the room, read, then follow it. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.setStatus('connecting', 'Connecting to chat…');
    void this.run();
  }

  /** Stops for good: aborts whatever is in flight (the long-poll included). */
  stop(): void {
    this.stopped = true;
    this.stopCtrl.abort();
    this.wake?.();
    this.thawed?.();
  }

  /**
   * Stops following for now (the page goes into the back/forward cache):
   * aborts the waiting long-poll; `thaw()` picks up from the same token.
   */
  freeze(): void {
    if (this.stopped || this.frozen) return;
    this.frozen = true;
    this.followCtrl?.abort();
    this.wake?.();
  }

  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.thawed?.();
  }

  /**
   * Newer facts from OnAir (`/api/streams/<stream>`): used while the room is
   * not found yet (OnAir may create it or learn its alias later).
   */
  updateEndpoint(endpoint: ChatEndpoint, searchTerm?: string): void {
    if (normalizeBase(endpoint.homeserver) !== this.homeserver || this.roomId) return;
    const changed = endpoint.alias !== this.endpoint.alias || endpoint.room_id !== this.endpoint.room_id;
    this.endpoint.alias = endpoint.alias ?? null;
    this.endpoint.room_id = endpoint.room_id ?? null;
    if (searchTerm) this.opts.searchTerm = searchTerm;
    if (changed && this.status === 'no-room') this.wake?.();
  }

  /** The room's matrix.to link (alias when known, else the room id). */
  nativeLink(): string | null {
    if (this.endpoint.alias) return matrixToLink(this.endpoint.alias);
    if (this.roomId) return matrixToLink(this.roomId, this.via[0] ?? serverOf(this.roomId));
    return null;
  }

  snapshot(): GuestChatSnapshot {
    return {
      status: this.status,
      statusText: this.statusText,
      homeserver: this.homeserver,
      alias: this.endpoint.alias ?? null,
      roomId: this.roomId,
      resolvedBy: this.resolvedBy,
      userId: this.session?.userId ?? null,
      displayName: this.displayName(),
      reusedSession: this.reusedSession,
      joined: this.isJoined(),
      title: this.titles.current,
      messages: this.messages.map((m) => ({
        id: m.id,
        sender: m.sender,
        senderName: m.senderName,
        body: m.body,
        ts: m.ts,
        kind: m.kind ?? 'text',
      })),
      follow: { mode: this.follow.mode, ...this.counts, inFlight: this.followCtrl !== null },
    };
  }

  /** Sends a text message, joining the room as a guest first when needed. */
  async send(text: string): Promise<void> {
    const body = text.trim();
    if (!body) return;
    if (!this.ready || !this.session || !this.roomId) throw new Error(this.statusText || 'chat is not connected');
    const roomId = this.roomId;
    const txnId = `onair${Date.now().toString(36)}${(this.txn++).toString(36)}`;
    const localId = `local:${txnId}`;
    const own: ChatMessage = {
      id: localId,
      sender: this.session.userId,
      senderName: this.displayName(),
      body,
      ts: Date.now(),
      own: true,
      pending: true,
    };
    this.keep(own);
    this.opts.onMessages?.([own], false);
    try {
      await this.ensureJoined();
      // The same txnId on a retry: the homeserver sends it once.
      const res = await this.api(
        'PUT',
        `/rooms/${enc(roomId)}/send/m.room.message/${enc(txnId)}`,
        { msgtype: 'm.text', body },
        { retries: 3 },
      );
      const eventId = typeof res.event_id === 'string' ? res.event_id : null;
      if (!eventId) throw new Error('no event id in the answer');
      if (this.follow.ownEventSeen(eventId)) {
        // The poll was quicker than the answer: that copy is shown already.
        this.forget(localId);
        this.opts.onRemove?.(localId);
      } else {
        this.patch(localId, { id: eventId, pending: false });
        this.opts.onUpdate?.(localId, { id: eventId, pending: false });
      }
    } catch (e) {
      this.forget(localId);
      this.opts.onRemove?.(localId);
      throw new Error(this.describeSendError(e));
    }
  }

  /** Sets this guest's display name (the homeserver updates its member event in joined rooms). */
  async rename(name: string): Promise<void> {
    const displayname = name.trim().slice(0, 64);
    if (!displayname) return;
    if (!this.session) throw new Error(this.statusText || 'chat is not connected');
    await this.api('PUT', `/profile/${enc(this.session.userId)}/displayname`, { displayname }, { retries: 2 });
    this.session.displayName = displayname;
    this.saveSession();
    this.names.set(this.session.userId, displayname);
    this.opts.onIdentity?.(this.session.userId, displayname);
    this.opts.onMemberName?.(this.session.userId, displayname);
  }

  // ----- the main loop

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      if (this.frozen) {
        await new Promise<void>((resolve) => (this.thawed = resolve));
        this.thawed = null;
        continue;
      }
      try {
        if (!this.ready) {
          await this.ensureSession();
          await this.resolveRoom();
          await this.readInitial();
          this.ready = true;
        } else if (this.follow.mode === 'events') {
          await this.longPoll();
        } else {
          await this.poll();
        }
        // A long-poll refused mid-way: start over (a fresh token, or the fallback).
        if (!this.ready) continue;
        failures = 0;
        this.setStatus('ready', '');
        await this.pause(this.follow.nextDelayMs(Date.now(), this.opts.pollMs ?? DEFAULT_POLL_MS));
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof Aborted) continue; // frozen: the loop waits for thaw()
        failures++;
        await this.pause(chatRetryDelayMs(this.onFailure(e), failures));
      }
    }
  }

  /** Classifies a failure of the loop and shows it (the kind sets the wait before trying again). */
  private onFailure(e: unknown): ChatFailure {
    const host = hostOf(this.homeserver);
    if (e instanceof Unreachable) {
      this.setStatus('unreachable', `The chat server (${host}) cannot be reached. Retrying…`);
      return 'unreachable';
    }
    if (e instanceof GuestsForbidden || (e instanceof MatrixError && e.errcode === 'M_GUEST_ACCESS_FORBIDDEN')) {
      this.setStatus(
        'guests-forbidden',
        `The chat server (${host}) does not allow guests. Open the room in your Matrix app to chat.`,
      );
      return 'guests-forbidden';
    }
    if (e instanceof MatrixError && (e.status === 401 || e.errcode === 'M_UNKNOWN_TOKEN')) {
      // The guest session is gone (logged out, server reset): start over with a new guest.
      this.dropSession();
      this.ready = false;
      this.setStatus('connecting', 'Connecting to chat…');
      return 'session-gone';
    }
    if (e instanceof NoRoom) {
      this.ready = false;
      this.setStatus('no-room', e.message);
      return 'no-room';
    }
    if (e instanceof MatrixError && e.status === 403 && !this.ready) {
      this.setStatus('error', `The chat room cannot be read: ${e.message}`);
      return 'unreadable';
    }
    this.setStatus('error', `Chat error: ${errorText(e)}. Retrying…`);
    return 'other';
  }

  private async pause(ms: number): Promise<void> {
    if (this.stopped || this.frozen || ms <= 0) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
    this.wake = null;
  }

  // ----- session

  private async ensureSession(): Promise<void> {
    if (!this.session) {
      const stored = this.loadSession();
      if (stored) {
        this.session = stored;
        try {
          const who = await this.api('GET', '/account/whoami');
          if (who.user_id !== stored.userId) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'another user');
          this.reusedSession = true;
        } catch (e) {
          if (e instanceof MatrixError && (e.status === 401 || e.errcode === 'M_UNKNOWN_TOKEN')) {
            this.dropSession();
          } else {
            this.session = null;
            throw e;
          }
        }
      }
    }
    if (!this.session) {
      let res: Record<string, unknown>;
      try {
        res = await this.api('POST', '/register?kind=guest', {}, { auth: false, retries: 1 });
      } catch (e) {
        // 403: guest access (or registration) is disabled on this homeserver.
        if (e instanceof MatrixError && e.status === 403) throw new GuestsForbidden(e.message);
        throw e;
      }
      if (typeof res.user_id !== 'string' || typeof res.access_token !== 'string') {
        throw new Error('the guest registration answer has no access token');
      }
      this.session = {
        userId: res.user_id,
        accessToken: res.access_token,
        deviceId: typeof res.device_id === 'string' ? res.device_id : undefined,
      };
      this.reusedSession = false;
      this.saveSession();
    }
    this.opts.onIdentity?.(this.session.userId, this.displayName());
  }

  private loadSession(): GuestSession | null {
    try {
      const raw = this.storage?.getItem(guestStorageKey(this.homeserver));
      if (!raw) return null;
      const s = JSON.parse(raw) as Partial<GuestSession>;
      if (typeof s.userId !== 'string' || typeof s.accessToken !== 'string') return null;
      return {
        userId: s.userId,
        accessToken: s.accessToken,
        deviceId: typeof s.deviceId === 'string' ? s.deviceId : undefined,
        displayName: typeof s.displayName === 'string' ? s.displayName : undefined,
        joined: Array.isArray(s.joined) ? s.joined.filter((x): x is string => typeof x === 'string') : [],
      };
    } catch {
      return null;
    }
  }

  private saveSession(): void {
    if (!this.session) return;
    try {
      this.storage?.setItem(guestStorageKey(this.homeserver), JSON.stringify(this.session));
    } catch {
      // Storage full or blocked: the guest just won't be reused next time.
    }
  }

  private dropSession(): void {
    this.session = null;
    this.reusedSession = false;
    try {
      this.storage?.removeItem(guestStorageKey(this.homeserver));
    } catch {
      // ignore
    }
  }

  private displayName(): string {
    const s = this.session;
    if (!s) return '';
    return s.displayName || this.names.get(s.userId) || defaultGuestName(s.userId);
  }

  private isJoined(): boolean {
    return !!(this.roomId && this.session?.joined?.includes(this.roomId));
  }

  // ----- the room

  private async resolveRoom(): Promise<void> {
    if (this.roomId) return;
    if (this.endpoint.room_id) {
      this.roomId = this.endpoint.room_id;
      this.via = [serverOf(this.endpoint.room_id)];
      this.resolvedBy = 'room_id';
      return;
    }
    const alias = this.endpoint.alias;
    if (alias) {
      try {
        const res = await this.api('GET', `/directory/room/${enc(alias)}`);
        if (typeof res.room_id === 'string') {
          this.roomId = res.room_id;
          this.via = Array.isArray(res.servers) ? res.servers.filter((x): x is string => typeof x === 'string') : [];
          this.resolvedBy = 'alias';
          return;
        }
      } catch (e) {
        if (!(e instanceof MatrixError && e.status === 404)) throw e;
      }
    }
    const found = await this.searchDirectory();
    if (found) {
      this.roomId = found;
      this.via = [serverOf(found)];
      this.resolvedBy = 'directory';
      return;
    }
    throw new NoRoom(
      alias
        ? `The chat room ${alias} was not found on ${hostOf(this.homeserver)} (yet). Retrying…`
        : 'This stream has no chat room (yet). Retrying…',
    );
  }

  /**
   * The public room directory, searched by the stream's title: a room of that
   * exact name (case-insensitive), preferring ones guests can read and join,
   * then one whose canonical alias is ours.
   */
  private async searchDirectory(): Promise<string | null> {
    const term = (this.opts.searchTerm ?? '').trim();
    const alias = this.endpoint.alias ?? '';
    if (!term && !alias) return null;
    const res = await this.api('POST', '/publicRooms', {
      limit: 50,
      filter: { generic_search_term: term || localpart(alias) },
    });
    const rooms = Array.isArray(res.chunk) ? (res.chunk as Record<string, unknown>[]) : [];
    const byAlias = rooms.find((r) => alias && r.canonical_alias === alias);
    if (byAlias && typeof byAlias.room_id === 'string') return byAlias.room_id;
    const want = term.toLowerCase();
    const named = rooms.filter((r) => typeof r.name === 'string' && r.name.trim().toLowerCase() === want);
    named.sort((a, b) => score(b) - score(a));
    const best = named[0];
    return best && typeof best.room_id === 'string' ? best.room_id : null;
  }

  /**
   * The stream token for "now" (before the history, so nothing sent while it is
   * read is lost), the newest messages and the title. Then new events are
   * long-polled from that token, or polled from the history's token when the
   * homeserver refuses `/events`.
   */
  private async readInitial(): Promise<void> {
    const roomId = this.roomId as string;
    const token = this.follow.beginRead() ? await this.streamToken() : null;
    let res: Record<string, unknown>;
    try {
      res = await this.messagesPage({ dir: 'b', limit: HISTORY_LIMIT });
    } catch (e) {
      // Not world-readable: a joined guest can still read (needs guest access).
      if (e instanceof MatrixError && e.status === 403 && !this.isJoined()) {
        await this.ensureJoined();
        res = await this.messagesPage({ dir: 'b', limit: HISTORY_LIMIT });
      } else {
        throw e;
      }
    }
    if (typeof res.start !== 'string') throw new Error('no pagination token from /messages');
    const chunk = Array.isArray(res.chunk) ? (res.chunk as MatrixEvent[]) : [];
    this.absorbState(res.state);
    const history = this.toMessages(chunk.slice().reverse(), true);
    // Everyone under their current name, as live renames do.
    for (const m of history) if (m.kind !== 'event') m.senderName = this.nameOf(m.sender);
    this.follow.historyRead(res.start, token);
    // The title now (after the token, so the poll can only bring newer names).
    let title: string | null = null;
    try {
      title = roomNameOf(await this.api('GET', `/rooms/${enc(roomId)}/state/m.room.name/`));
    } catch (e) {
      if (!(e instanceof MatrixError && e.status === 404)) throw e;
    }
    this.setTitle(title, true);
    const fresh = this.follow.fresh(history);
    for (const m of fresh) this.keep(m);
    if (fresh.length) this.opts.onMessages?.(fresh, true);
    if (this.session) this.opts.onIdentity?.(this.session.userId, this.displayName());
    this.follow.follow();
  }

  /**
   * `/events?room_id=…&timeout=0`: the token of "now". A room that is not
   * world-readable can only be followed once joined (needs guest access). Null
   * when the homeserver refuses `/events` (then `/messages` is polled).
   */
  private async streamToken(): Promise<string | null> {
    let res: Record<string, unknown>;
    try {
      try {
        res = await this.eventsPage(null, 0);
      } catch (e) {
        if (!(e instanceof MatrixError && e.status === 403 && !this.isJoined())) throw e;
        await this.ensureJoined();
        res = await this.eventsPage(null, 0);
      }
    } catch (e) {
      if (!eventsRefusal(e)) throw e;
      this.follow.eventsUnavailable();
      return null;
    }
    if (typeof res.end !== 'string') {
      this.follow.eventsUnavailable();
      return null;
    }
    return res.end;
  }

  /**
   * One `/events` long-poll: answers when something happened in the room (or
   * after `longPollMs` with nothing). Right after a failure it does not wait
   * (`timeout=0`), so a homeserver that is back shows as such at once.
   */
  private async longPoll(): Promise<void> {
    const roomId = this.roomId as string;
    const wait = longPollWaitMs(this.status === 'ready', this.opts.longPollMs ?? DEFAULT_LONG_POLL_MS);
    const ctrl = new AbortController();
    this.followCtrl = ctrl;
    this.follow.longPollStarted(Date.now());
    let res: Record<string, unknown>;
    try {
      res = await this.eventsPage(this.follow.streamFrom, wait, ctrl.signal);
    } catch (e) {
      if (!eventsRefusal(e)) throw e;
      // A token the homeserver no longer takes, or `/events` gone: a fresh start (and the
      // `/messages` fallback when that keeps happening).
      this.follow.longPollRefused();
      this.ready = false;
      return;
    } finally {
      if (this.followCtrl === ctrl) this.followCtrl = null;
    }
    this.follow.longPollAnswered(res.end);
    // The stream also carries presence, typing, receipts and the guest's own joins elsewhere.
    const chunk = (Array.isArray(res.chunk) ? (res.chunk as MatrixEvent[]) : []).filter((ev) => ev.room_id === roomId);
    await this.learnSenders(chunk);
    const msgs = this.follow.fresh(this.toMessages(chunk, false));
    for (const m of msgs) this.keep(m);
    if (msgs.length) this.opts.onMessages?.(msgs, false);
  }

  private eventsPage(from: string | null, timeoutMs: number, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const params = new URLSearchParams({ room_id: this.roomId as string, timeout: String(timeoutMs), limit: '100' });
    if (from) params.set('from', from);
    this.counts.eventRequests++;
    if (timeoutMs > 0) this.counts.longPolls++;
    return this.api('GET', `/events?${params}`, undefined, { timeoutMs: timeoutMs + LONG_POLL_SLACK_MS, signal });
  }

  /**
   * `/events` has no lazy-loaded members (unlike `/messages`): the names of
   * senders not met yet are read from the room state (unknown ones show as
   * their localpart).
   */
  private async learnSenders(chunk: MatrixEvent[]): Promise<void> {
    const roomId = this.roomId as string;
    const own = this.session?.userId;
    const members = new Set(chunk.filter((ev) => ev.type === 'm.room.member').map((ev) => ev.state_key));
    const unknown = [
      ...new Set(
        chunk
          .filter((ev) => ev.type === 'm.room.message' && ev.sender)
          .map((ev) => ev.sender as string)
          .filter((u) => u !== own && !this.names.has(u) && !members.has(u)),
      ),
    ].slice(0, MAX_NAME_LOOKUPS);
    await Promise.all(
      unknown.map(async (userId) => {
        try {
          const content = await this.api('GET', `/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`);
          if (!this.names.has(userId)) this.memberName({ type: 'm.room.member', state_key: userId, content }, false);
        } catch (e) {
          // Not a member (any more), say: the localpart shows, and is not asked for again.
          if (e instanceof MatrixError && !this.names.has(userId)) this.names.set(userId, localpart(userId));
        }
      }),
    );
  }

  private async poll(): Promise<void> {
    this.counts.messagePolls++;
    const res = await this.messagesPage({ dir: 'f', limit: 100, from: this.follow.from as string });
    this.follow.pollAnswered(res.end);
    const chunk = Array.isArray(res.chunk) ? (res.chunk as MatrixEvent[]) : [];
    this.absorbState(res.state);
    const msgs = this.follow.fresh(this.toMessages(chunk, false));
    for (const m of msgs) this.keep(m);
    if (msgs.length) this.opts.onMessages?.(msgs, false);
  }

  private messagesPage(q: { dir: 'b' | 'f'; limit: number; from?: string }): Promise<Record<string, unknown>> {
    const params = new URLSearchParams({ dir: q.dir, limit: String(q.limit), filter: EVENT_FILTER });
    if (q.from) params.set('from', q.from);
    return this.api('GET', `/rooms/${enc(this.roomId as string)}/messages?${params}`);
  }

  /**
   * Lazy-loaded member state: names of senders not known yet. (It can already
   * hold a rename that is also in the chunk; the chunk's event is what tells
   * the view about the change, so known names are left to it.)
   */
  private absorbState(state: unknown): void {
    if (!Array.isArray(state)) return;
    for (const ev of state as MatrixEvent[]) {
      if (ev.type === 'm.room.member' && ev.state_key && !this.names.has(ev.state_key)) this.memberName(ev, false);
    }
  }

  /** Member event → name map; tells the view when a known name changed. */
  private memberName(ev: MatrixEvent, live: boolean): void {
    const userId = ev.state_key as string;
    const dn = ev.content?.displayname;
    const name = typeof dn === 'string' && dn.trim() ? dn.trim() : localpart(userId);
    const before = this.names.get(userId);
    this.names.set(userId, name);
    if (live && before !== undefined && before !== name) {
      for (const m of this.messages) if (m.sender === userId && m.kind !== 'event') m.senderName = name;
      this.opts.onMemberName?.(userId, name);
    }
  }

  /** Timeline events (oldest first) → chat lines; applies names, titles, edits and redactions. */
  private toMessages(events: MatrixEvent[], history: boolean): ChatMessage[] {
    const out: ChatMessage[] = [];
    const own = this.session?.userId;
    for (const ev of events) {
      const id = ev.event_id;
      const sender = ev.sender ?? '';
      const ts = typeof ev.origin_server_ts === 'number' ? ev.origin_server_ts : Date.now();
      const content = ev.content ?? {};
      switch (ev.type) {
        case 'm.room.member':
          if (ev.state_key) this.memberName(ev, !history);
          break;
        case 'm.room.name': {
          if (history || !id) break; // the current name is read from the room state
          const name = roomNameOf(content);
          if (!this.setTitle(name, false)) break;
          out.push({
            id,
            sender,
            senderName: this.nameOf(sender),
            body: titleChangeLine(this.nameOf(sender), name),
            ts,
            kind: 'event',
          });
          break;
        }
        case 'm.room.redaction': {
          const target = typeof ev.redacts === 'string' ? ev.redacts : content.redacts;
          if (typeof target === 'string') {
            const i = this.messages.findIndex((m) => m.id === target);
            if (i >= 0) {
              this.messages.splice(i, 1);
              this.opts.onRemove?.(target);
            }
            const j = out.findIndex((m) => m.id === target);
            if (j >= 0) out.splice(j, 1);
          }
          break;
        }
        case 'm.room.message': {
          if (!id || typeof content.body !== 'string') break; // redacted or malformed
          const rel = content['m.relates_to'] as Record<string, unknown> | undefined;
          if (rel && rel.rel_type === 'm.replace' && typeof rel.event_id === 'string') {
            const nc = content['m.new_content'] as Record<string, unknown> | undefined;
            const body = typeof nc?.body === 'string' ? nc.body : content.body.replace(/^\* /, '');
            const target = rel.event_id;
            const known = this.messages.find((m) => m.id === target) ?? out.find((m) => m.id === target);
            if (known && known.sender === sender) {
              known.body = body;
              if (!out.includes(known)) this.opts.onUpdate?.(target, { body });
            }
            break;
          }
          const msgtype = content.msgtype;
          out.push({
            id,
            sender,
            senderName: this.nameOf(sender),
            body: content.body,
            ts,
            kind: msgtype === 'm.emote' ? 'emote' : msgtype === 'm.notice' ? 'notice' : 'text',
            own: !!own && sender === own,
          });
          break;
        }
      }
    }
    return out;
  }

  private nameOf(userId: string): string {
    return this.names.get(userId) ?? (userId === this.session?.userId ? this.displayName() : localpart(userId));
  }

  /** True when the title was told to the page (changed, or `force`). */
  private setTitle(title: string | null, force: boolean): boolean {
    if (!this.titles.update(title, force)) return false;
    this.opts.onTitle?.(title);
    return true;
  }

  private keep(m: ChatMessage): void {
    this.messages.push(m);
    if (this.messages.length > MAX_KEPT) this.messages.splice(0, this.messages.length - MAX_KEPT);
  }

  private forget(id: string): void {
    const i = this.messages.findIndex((m) => m.id === id);
    if (i >= 0) this.messages.splice(i, 1);
  }

  private patch(id: string, patch: Partial<ChatMessage>): void {
    const m = this.messages.find((x) => x.id === id);
    if (m) Object.assign(m, patch);
  }

  // ----- joining

  /** Joins the room once (concurrent callers share the attempt); gives the guest a name first. */
  private ensureJoined(): Promise<void> {
    if (this.isJoined()) return Promise.resolve();
    if (!this.joinPromise) {
      this.joinPromise = this.join().finally(() => {
        this.joinPromise = null;
      });
    }
    return this.joinPromise;
  }

  private async join(): Promise<void> {
    const s = this.session;
    const roomId = this.roomId;
    if (!s || !roomId) throw new Error('chat is not connected');
    if (!s.displayName) {
      // Without a name a guest shows as its number; give it a readable one before it speaks.
      await this.rename(this.displayName()).catch(() => undefined);
    }
    const via = this.via.filter(Boolean).map((v) => `server_name=${encodeURIComponent(v)}`).join('&');
    await this.api('POST', `/join/${enc(roomId)}${via ? `?${via}` : ''}`, {}, { retries: 3 });
    s.joined = [...(s.joined ?? []).filter((r) => r !== roomId), roomId];
    this.saveSession();
  }

  private describeSendError(e: unknown): string {
    if (e instanceof Unreachable) return `the chat server (${hostOf(this.homeserver)}) cannot be reached`;
    if (e instanceof MatrixError && e.errcode === 'M_GUEST_ACCESS_FORBIDDEN') {
      return 'guests cannot write in this room; open it in your Matrix app';
    }
    if (e instanceof MatrixError && e.status === 403) return `not allowed: ${e.message}`;
    return errorText(e);
  }

  // ----- HTTP

  /**
   * One client-server API call (`path` below `/_matrix/client/v3`). Waits out
   * 429s; `retries` more attempts on network errors and 5xx.
   */
  private async api(
    method: string,
    path: string,
    body?: unknown,
    o: { auth?: boolean; retries?: number; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<Record<string, unknown>> {
    const url = `${this.homeserver}/_matrix/client/v3${path}`;
    let attempt = 0;
    let limited = 0;
    for (;;) {
      const headers: Record<string, string> = {};
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (o.auth !== false && this.session) headers.Authorization = `Bearer ${this.session.accessToken}`;
      // Aborted by the timeout (the homeserver does not answer), or on purpose (`stop()`, `freeze()`).
      const ctrl = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ctrl.abort();
      }, o.timeoutMs ?? REQUEST_TIMEOUT_MS);
      const outside = [this.stopCtrl.signal, o.signal].filter((x): x is AbortSignal => !!x);
      const abort = () => ctrl.abort();
      for (const sig of outside) {
        if (sig.aborted) ctrl.abort();
        else sig.addEventListener('abort', abort, { once: true });
      }
      const done = () => {
        clearTimeout(timer);
        for (const sig of outside) sig.removeEventListener('abort', abort);
      };
      let res: Response;
      let json: Record<string, unknown> = {};
      try {
        res = await fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: 'no-store',
          signal: ctrl.signal,
        });
        const parsed: unknown = await res.json().catch(() => ({}));
        if (parsed && typeof parsed === 'object') json = parsed as Record<string, unknown>;
      } catch (e) {
        done();
        if (ctrl.signal.aborted && !timedOut) throw new Aborted('aborted');
        if (attempt++ < (o.retries ?? 0) && !this.stopped) {
          await sleep(500 * attempt);
          continue;
        }
        throw new Unreachable(timedOut ? 'timed out' : errorText(e));
      }
      done();
      if (res.ok) return json;
      const errcode = typeof json.errcode === 'string' ? json.errcode : '';
      const message = typeof json.error === 'string' ? json.error : `HTTP ${res.status}`;
      if (res.status === 429 && limited++ < 10 && !this.stopped) {
        await sleep(rateLimitDelayMs(json.retry_after_ms, res.headers.get('Retry-After')));
        continue;
      }
      if (res.status >= 500 && attempt++ < (o.retries ?? 0) && !this.stopped) {
        await sleep(500 * attempt);
        continue;
      }
      throw new MatrixError(res.status, errcode, message);
    }
  }

  private setStatus(status: GuestChatStatus, text: string): void {
    if (status === this.status && text === this.statusText) return;
    this.status = status;
    this.statusText = text;
    this.opts.onStatus?.(status, text);
  }
}

function score(r: Record<string, unknown>): number {
  return (r.world_readable === true ? 2 : 0) + (r.guest_can_join === true ? 1 : 0);
}

function defaultGuestName(userId: string): string {
  return `Guest ${localpart(userId)}`;
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function safeLocalStorage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Wiring for the viewer page

export interface MountedGuestChat {
  view: ChatView;
  client: GuestChat;
}

/**
 * A `ChatView` in `container` fed by a `GuestChat` for `endpoint`. `onTitle`
 * gets the room name (null: none, or not known).
 */
export function mountGuestChat(
  container: HTMLElement,
  endpoint: ChatEndpoint,
  opts: { searchTerm?: string; onTitle?: (title: string | null) => void; onStatus?: (s: GuestChatStatus) => void } = {},
): MountedGuestChat {
  let client: GuestChat | null = null;
  const view = new ChatView(container, {
    onSend: (text) => client?.send(text),
    onRename: (name) => client?.rename(name),
  });
  const showStatus = (status: GuestChatStatus, text: string) => {
    view.setStatus(text, status === 'ready' || status === 'connecting' ? 'info' : status === 'unreachable' ? 'warn' : 'error');
    view.setDisabled(status !== 'ready', status === 'ready' ? '' : status === 'connecting' ? 'Connecting…' : 'Chat unavailable');
    view.setNativeLink(client?.nativeLink() ?? null);
    container.dataset.status = status;
    opts.onStatus?.(status);
  };
  client = new GuestChat(endpoint, {
    searchTerm: opts.searchTerm,
    onStatus: showStatus,
    onMessages: (msgs, history) => view.addMessages(msgs, { history }),
    onUpdate: (id, patch) => view.updateMessage(id, patch),
    onRemove: (id) => view.removeMessage(id),
    onMemberName: (userId, name) => view.renameSender(userId, name),
    onTitle: (title) => opts.onTitle?.(title),
    onIdentity: (_userId, name) => view.setName(name),
  });
  view.setNativeLink(client.nativeLink());
  showStatus('connecting', 'Connecting to chat…');
  client.start();
  // Leaving the page ends the long-poll at once; a page kept in the back/forward cache
  // pauses it and goes on from the same point when shown again.
  const c = client;
  window.addEventListener('pagehide', (e) => (e.persisted ? c.freeze() : c.stop()));
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) c.thaw();
  });
  return { view, client };
}
