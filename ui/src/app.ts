// The desktop window (`app.html`, embedded in the OnAir app): live preview with
// the chat beside it, title editor, stream health, viewer link + QR, OBS setup,
// settings. Commands go through Tauri's `invoke`; engine events arrive pushed as
// the Tauri event `engine` (see app-bridge.ts).
import './style.css';
import './app.css';
import { mountPlayer, playerOptionsFromQuery, type PlayerView } from './player';
import { ChatView, type ChatMessage } from './chat';
import {
  copyText,
  errorText,
  invoke,
  listen,
  type AppInfo,
  type ControlStatus,
  type EngineEvent,
  type ObsApplyOutcome,
  type ObsProfileOutcome,
  type ObsSetupInfo,
  type Settings,
  type StreamStatus,
  type TrayState,
} from './app-bridge';
import { BitrateHistory, drawGraph, figures } from './app-health';
import { allDone, budgetLine, reachView, walkthrough, type Progress } from './reach-view';
import { destinationBody, restreamStateText } from './restream-view';
import type { RestreamStatus } from './api/RestreamStatus';

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** What the browser test reads (`window.onairApp`). */
export interface AppHandle {
  info: AppInfo | null;
  view: PlayerView | null;
  chat: ChatView | null;
  events: EngineEvent[];
  state: { armed: boolean; tray: TrayState; chatMessages: number; steps: string[] };
}

declare global {
  interface Window {
    onairApp?: AppHandle;
  }
}

const handle: AppHandle = {
  info: null,
  view: null,
  chat: null,
  events: [],
  state: { armed: false, tray: 'offline', chatMessages: 0, steps: [] },
};
window.onairApp = handle;

let info: AppInfo;
let armed = false;
let live = false;
let publishing = false;
/** A refused publish (OBS knocking before Go live, or a wrong key) shows for this long; OBS
 * retries every few seconds, so the notice stays while it keeps trying (as the tray does). */
const KNOCK_MS = 15_000;
let knockUntil = 0;
let knockTimer: number | undefined;
const history = new BitrateHistory();
let lastStats: StreamStatus | null = null;

function showError(text: string): void {
  const e = $('app-error');
  e.textContent = text;
  e.hidden = text === '';
}

// ---------------------------------------------------------------------------
// Go live ⇄ End stream and the state badge

function knocking(): boolean {
  return Date.now() < knockUntil;
}

function trayState(): TrayState {
  if (live) return 'live';
  return publishing || armed || knocking() ? 'ready' : 'offline';
}

/** A publish was refused: say why, and what to do, until the knocks stop. */
function onRefused(reason: string): void {
  knockUntil = Date.now() + KNOCK_MS;
  const notice = $('knock');
  notice.textContent = /press Go live/.test(reason)
    ? 'OBS is trying to stream: press Go live to put it on air.'
    : `A publish was refused: ${reason}. Copy the OBS settings again (OBS panel).`;
  notice.hidden = false;
  window.clearTimeout(knockTimer);
  knockTimer = window.setTimeout(renderState, KNOCK_MS + 50);
}

function renderState(): void {
  renderSteps();
  const t = trayState();
  handle.state.armed = armed;
  handle.state.tray = t;
  document.body.dataset.tray = t;
  const badge = $('state-badge');
  badge.dataset.state = t;
  badge.textContent = t === 'live' ? 'LIVE' : t === 'ready' ? (armed ? 'WAITING FOR OBS' : 'OBS CONNECTED') : 'OFFLINE';
  badge.classList.toggle('is-live', t === 'live');
  const notice = $('knock');
  if (!knocking() || publishing) notice.hidden = true;
  const btn = $<HTMLButtonElement>('live-toggle');
  btn.textContent = armed ? 'End stream' : 'Go live';
  btn.classList.toggle('is-armed', armed);
}

$('live-toggle').addEventListener('click', async () => {
  const btn = $<HTMLButtonElement>('live-toggle');
  btn.disabled = true;
  try {
    await invoke(armed ? 'end_stream' : 'go_live', { stream: info.stream });
    showError('');
  } catch (e) {
    showError(errorText(e));
  } finally {
    btn.disabled = false;
  }
});

// ---------------------------------------------------------------------------
// Title

const titleInput = $<HTMLInputElement>('title-input');
let savedTitle = '';

function showTitle(title: string): void {
  savedTitle = title;
  if (document.activeElement !== titleInput) titleInput.value = title;
  document.title = title ? `OnAir — ${title}` : 'OnAir';
}

$('title-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const title = titleInput.value.trim();
  if (title === savedTitle) return;
  try {
    await invoke('set_title', { stream: info.stream, title });
    showTitle(title);
    showError('');
  } catch (err) {
    showError(`Title not saved: ${errorText(err)}`);
  }
});

// ---------------------------------------------------------------------------
// Health

function renderHealth(): void {
  const f = figures(lastStats);
  $('h-bitrate').textContent = f.bitrate;
  $('h-fps').textContent = f.fps;
  $('h-keyint').textContent = f.keyint;
  $('h-res').textContent = f.resolution;
  $('h-viewers').textContent = f.viewers;
  $('h-keyint-warning').hidden = !f.keyintWarning;
  $('h-bframes-warning').hidden = !f.bframes;
  $('health-summary').textContent = lastStats?.live ? '' : 'Offline';
  drawGraph($<HTMLCanvasElement>('bitrate-graph'), history, Date.now());
}

// ---------------------------------------------------------------------------
// Chat: the shared view, fed by the engine's chat events; sending goes through
// the streamer's Matrix account in the engine.

function mountChat(): ChatView {
  const view = new ChatView($('chat-body'), {
    onSend: async (text) => {
      await invoke('send_chat', { stream: info.stream, text });
    },
  });
  view.setStatus('Chat runs through your Matrix account: log in under Settings.', 'info');
  return view;
}

function renderMatrix(state: string, user = ''): void {
  $('matrix-state').textContent = state;
  $('matrix-user').textContent = user ? `as ${user}` : '';
  $('chat-state').textContent = state === 'connected' ? '' : `Matrix: ${state}`;
  const chat = handle.chat;
  if (!chat) return;
  if (state === 'connected') {
    chat.setStatus('');
    chat.setDisabled(false);
  } else if (state === 'off' || state === 'not logged in' || state.startsWith('logged out')) {
    chat.setStatus('Chat runs through your Matrix account: log in under Settings.', 'info');
    chat.setDisabled(true, 'Log in to Matrix to chat');
  } else {
    chat.setStatus(`Matrix: ${state}`, state === 'connecting' ? 'info' : 'warn');
    chat.setDisabled(state !== 'connecting', 'Chat unavailable');
  }
}

function addChat(ev: Extract<EngineEvent, { type: 'chat' }>): void {
  const msg: ChatMessage = {
    id: ev.event_id,
    sender: ev.sender,
    senderName: ev.display_name || ev.sender,
    body: ev.body,
    ts: ev.ts_ms,
    own: false,
  };
  handle.chat?.addMessages([msg]);
  handle.state.chatMessages++;
}

// ---------------------------------------------------------------------------
// Engine events (pushed)

function onEvent(ev: EngineEvent): void {
  handle.events.push(ev);
  if (handle.events.length > 200) handle.events.shift();
  if ('stream' in ev && ev.stream !== info.stream) return;
  switch (ev.type) {
    case 'armed':
      armed = ev.armed;
      break;
    case 'publish_started':
      publishing = true;
      break;
    case 'live':
      publishing = true;
      live = true;
      break;
    case 'publish_ended':
      publishing = false;
      live = false;
      lastStats = null;
      renderHealth();
      break;
    case 'bframes':
      $('h-bframes-warning').hidden = false;
      break;
    case 'title':
      showTitle(ev.title);
      break;
    case 'chat':
      addChat(ev);
      break;
    case 'matrix':
      renderMatrix(ev.state);
      break;
    case 'stats':
      lastStats = ev.status;
      if (ev.status.live) {
        live = true;
        history.add(Date.now(), ev.status.bitrate_kbps ?? 0);
      }
      renderHealth();
      renderRestream(ev.status.restream);
      break;
    case 'publish_refused':
      onRefused(ev.reason);
      break;
    case 'reach':
      void onReach();
      break;
    case 'restream':
      void refreshRestream();
      break;
  }
  renderState();
}

// ---------------------------------------------------------------------------
// Restream destinations

function renderRestream(list: RestreamStatus[]): void {
  const ul = $('restream-list');
  ul.replaceChildren();
  for (const d of list) {
    const li = document.createElement('li');
    li.dataset.state = d.enabled ? d.state : 'disabled';
    const text = document.createElement('span');
    text.textContent = `${d.name} → ${d.url}${d.ome ? ' (OME)' : ''}: ${restreamStateText(d)}`;
    const toggle = document.createElement('button');
    toggle.type = 'button';
    toggle.className = 'btn btn-quiet';
    toggle.textContent = d.enabled ? 'Disable' : 'Enable';
    toggle.addEventListener('click', () =>
      restreamAction(d.enabled ? 'restream_disable' : 'restream_enable', { name: d.name }),
    );
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'btn btn-quiet';
    remove.textContent = 'Remove';
    remove.addEventListener('click', () => restreamAction('restream_remove', { name: d.name }));
    li.append(text, ' ', toggle, ' ', remove);
    ul.append(li);
  }
}

async function refreshRestream(): Promise<void> {
  try {
    renderRestream(await invoke<RestreamStatus[]>('restream_list', { stream: info.stream }));
  } catch (e) {
    $('restream-note').textContent = errorText(e);
  }
}

async function restreamAction(cmd: string, args: Record<string, unknown>): Promise<void> {
  const note = $('restream-note');
  try {
    await invoke(cmd, { stream: info.stream, ...args });
    note.textContent = '';
  } catch (err) {
    note.textContent = errorText(err);
  }
  await refreshRestream();
}

const restreamForm = $<HTMLFormElement>('restream-form');
restreamForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = restreamForm.elements;
  const value = (n: string) => (f.namedItem(n) as HTMLInputElement).value;
  const ome = (f.namedItem('ome') as HTMLInputElement).checked;
  const body = destinationBody(value('url'), value('key'), ome ? 3600 : 0);
  await restreamAction('restream_put', { name: value('name').trim(), body });
  if ($('restream-note').textContent === '') {
    restreamForm.reset();
    $('restream-note').textContent = 'Saved (the key in the system keyring).';
  }
});

// ---------------------------------------------------------------------------
// Viewer link, OBS setup

function renderShare(): void {
  $<HTMLInputElement>('viewer-url').value = info.viewer_url;
  // Our own SVG, rendered in Rust from the viewer link (qrcode crate).
  $('qr').innerHTML = info.viewer_qr_svg;
  $<HTMLInputElement>('obs-server').value = info.obs.server;
  $<HTMLInputElement>('obs-key').value = info.obs.stream_key;
}

/** The reach panel: who can watch, and what to do about it (see reach-view.ts). */
function renderReach(st: ControlStatus): void {
  const v = reachView(st.reach, st.https);
  const box = $('reach');
  box.dataset.state = v.state;
  $('reach-headline').textContent = v.headline;
  const advice = $('reach-advice');
  advice.replaceChildren(
    ...v.advice.map((a) => {
      const p = document.createElement('p');
      p.textContent = a;
      return p;
    }),
  );
  const lines = v.toForward.length > 0 ? v.toForward : v.mapped;
  const ports = $('reach-ports');
  ports.replaceChildren(
    ...lines.map((l) => {
      const li = document.createElement('li');
      li.textContent = l;
      return li;
    }),
  );
  ports.hidden = lines.length === 0;
  const https = $('reach-https');
  https.textContent = v.https ?? '';
  https.hidden = v.https === null;
  const budget = $('reach-budget');
  const line = budgetLine(st.budget);
  budget.textContent = line ?? '';
  budget.hidden = line === null;
  // Windows: what to answer the firewall's question (the engine sends it on Windows only).
  const firewall = $('reach-firewall');
  firewall.textContent = st.firewall_note ?? '';
  firewall.hidden = st.firewall_note === null;
}

// ---------------------------------------------------------------------------
// First start: the steps to the first stream, each with its state, until all are done once.

const STEPS_KEY = 'onair.steps';
type StepsMemory = { obsSetUp: boolean; linkShared: boolean; finished: boolean };

function stepsMemory(): StepsMemory {
  try {
    return { obsSetUp: false, linkShared: false, finished: false, ...JSON.parse(localStorage.getItem(STEPS_KEY) ?? '{}') };
  } catch {
    return { obsSetUp: false, linkShared: false, finished: false };
  }
}

function rememberSteps(change: Partial<StepsMemory>): void {
  try {
    localStorage.setItem(STEPS_KEY, JSON.stringify({ ...stepsMemory(), ...change }));
  } catch {
    // No storage: the walkthrough starts over next time.
  }
  renderSteps();
}

function renderSteps(): void {
  const mem = stepsMemory();
  const progress: Progress = {
    obsSetUp: mem.obsSetUp,
    obsStreaming: publishing || live || knocking(),
    armed,
    live,
    linkShared: mem.linkShared,
  };
  const steps = walkthrough(progress);
  const card = $('steps');
  card.hidden = mem.finished;
  $('steps-list').replaceChildren(
    ...steps.map((s) => {
      const li = document.createElement('li');
      li.dataset.step = s.id;
      li.dataset.state = s.state;
      const title = document.createElement('strong');
      title.textContent = s.title;
      li.append(title, s.state === 'done' ? 'Done' : s.hint);
      return li;
    }),
  );
  handle.state.steps = steps.map((s) => s.state);
  // Shown until the first stream went all the way; from the next start on it stays hidden.
  if (allDone(steps) && !mem.finished) {
    localStorage.setItem(STEPS_KEY, JSON.stringify({ ...mem, finished: true }));
  }
}

$('steps-hide').addEventListener('click', () => rememberSteps({ finished: true }));

let toastTimer: ReturnType<typeof setTimeout> | null = null;
function toast(text: string): void {
  const t = $('copied');
  t.textContent = text;
  t.hidden = false;
  if (toastTimer) clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 2500);
}

for (const btn of document.querySelectorAll<HTMLButtonElement>('[data-copy]')) {
  btn.addEventListener('click', async () => {
    const input = $<HTMLInputElement>(btn.dataset.copy ?? '');
    try {
      await copyText(input.value);
      if (input.id === 'viewer-url') rememberSteps({ linkShared: true });
      if (input.id === 'obs-key' || input.id === 'obs-server') rememberSteps({ obsSetUp: true });
      btn.textContent = 'Copied';
      setTimeout(() => (btn.textContent = 'Copy'), 1500);
      toast('Copied to the clipboard');
    } catch (e) {
      showError(`Cannot copy: ${errorText(e)}`);
    }
  });
}

$('obs-key-show').addEventListener('click', () => {
  const key = $<HTMLInputElement>('obs-key');
  const show = key.type === 'password';
  key.type = show ? 'text' : 'password';
  $('obs-key-show').textContent = show ? 'Hide' : 'Show';
});

// ---------------------------------------------------------------------------
// One-click OBS, three ways, best first: over obs-websocket (set + read back),
// an OBS profile to select, or server and key on the clipboard. The result
// says what was set, what was verified and what the user must still click.

const obsForm = $<HTMLFormElement>('obs-apply-form');
const obsField = (n: string) => obsForm.elements.namedItem(n) as HTMLInputElement;

function obsClipboardText(): string {
  return `OBS → Settings → Stream → Service: Custom\nServer: ${info.obs.server}\nStream Key: ${info.obs.stream_key}\n`;
}

function showObsResult(outcome: 'ok' | 'todo' | 'error' | 'busy', head: string, lists: Array<[string, string[], string?]>): void {
  const box = $('obs-result');
  box.hidden = false;
  box.dataset.outcome = outcome;
  $('obs-result-head').textContent = head;
  const out = $('obs-result-lists');
  out.replaceChildren();
  for (const [title, items, cls] of lists) {
    if (items.length === 0) continue;
    const h = document.createElement('h4');
    h.textContent = title;
    const ul = document.createElement('ul');
    if (cls) ul.className = cls;
    ul.dataset.list = title;
    for (const item of items) {
      const li = document.createElement('li');
      li.textContent = item;
      ul.append(li);
    }
    out.append(h, ul);
  }
}

function renderObsPasswordState(source: ObsSetupInfo['password']): void {
  $('obs-password-state').textContent =
    source === 'keyring'
      ? '(one is stored in the system keyring; type a new one to replace it)'
      : source === 'environment'
        ? '(from ONAIR_OBS_PASSWORD)'
        : '(none stored)';
}

async function setObsBusy(busy: boolean): Promise<void> {
  for (const id of ['obs-apply', 'obs-write-profile']) $<HTMLButtonElement>(id).disabled = busy;
}

obsForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const url = obsField('url').value.trim();
  const password = obsField('password').value;
  await setObsBusy(true);
  showObsResult('busy', 'Talking to OBS…', []);
  try {
    if (password) {
      await invoke('obs_save_password', { password });
      obsField('password').value = '';
      renderObsPasswordState('keyring');
    }
    const r = await invoke<ObsApplyOutcome>('obs_apply', { url: url || null });
    const rep = r.report;
    const mode = rep.output_mode === 'Advanced' ? 'Advanced' : 'Simple';
    const todo = [...rep.todo];
    if (!rep.streaming) todo.push('Start Streaming in OBS (then Go live here, if you have not yet)');
    const head = r.complete
      ? `OBS ${rep.obs_version} is set up (profile “${rep.profile}”, ${mode} output mode). Only Start Streaming is left.`
      : `OBS ${rep.obs_version} is partly set up (profile “${rep.profile}”, ${mode} output mode): see what is left below.`;
    if (r.complete) rememberSteps({ obsSetUp: true });
    showObsResult(r.complete && rep.mismatches.length === 0 ? 'ok' : 'todo', head, [
      ['Set', rep.done],
      ['Verified (read back from OBS)', rep.verified],
      ['Read back differently', rep.mismatches, 'is-bad'],
      ['Still to click in OBS', todo, 'is-todo'],
    ]);
  } catch (err) {
    showObsResult('error', `OBS was not set up: ${errorText(err)}`, [
      [
        'Instead',
        [
          'Write OBS profile: OnAir writes a profile to select in OBS (Profile menu)',
          'Copy server and key: paste them in OBS → Settings → Stream (Service: Custom…)',
        ],
        'is-todo',
      ],
    ]);
  } finally {
    await setObsBusy(false);
  }
});

$('obs-write-profile').addEventListener('click', async () => {
  await setObsBusy(true);
  try {
    const r = await invoke<ObsProfileOutcome>('obs_write_profile', {});
    const files = r.files.map((f) => f.split(/[\\/]/).pop() ?? f);
    if (r.problems.length === 0) rememberSteps({ obsSetUp: true });
    showObsResult(r.problems.length ? 'todo' : 'ok', `Wrote the OBS profile “OnAir” to ${r.dir}.`, [
      ['Written', files],
      ['Read back differently', r.problems, 'is-bad'],
      ['Still to click in OBS', r.todo, 'is-todo'],
    ]);
  } catch (err) {
    showObsResult('error', `No profile written: ${errorText(err)}`, [
      ['Instead', ['Copy server and key: paste them in OBS → Settings → Stream (Service: Custom…)'], 'is-todo'],
    ]);
  } finally {
    await setObsBusy(false);
  }
});

$('obs-copy-all').addEventListener('click', async () => {
  try {
    await copyText(obsClipboardText());
    rememberSteps({ obsSetUp: true });
    showObsResult('todo', 'Copied the server and the stream key.', [
      [
        'Still to click in OBS',
        [
          'Settings → Stream → Service: Custom…, paste Server and Stream Key',
          'Settings → Output: Keyframe Interval 2 s, no B-frames (x264 options: bframes=0)',
          'Start Streaming',
        ],
        'is-todo',
      ],
    ]);
  } catch (err) {
    showError(`Cannot copy: ${errorText(err)}`);
  }
});

async function loadObsSetup(): Promise<void> {
  try {
    const s = await invoke<ObsSetupInfo>('obs_setup_info');
    obsField('url').placeholder = s.default_url;
    renderObsPasswordState(s.password);
  } catch (e) {
    $('obs-password-state').textContent = `(${errorText(e)})`;
  }
}

// ---------------------------------------------------------------------------
// Settings and Matrix account

const settingsForm = $<HTMLFormElement>('settings-form');
const toggleNames = [
  'went_live',
  'publisher_dropped',
  'stream_ended',
  'obs_connected',
  'chat_mention',
  'restream_failing',
] as const;

function fillSettings(s: Settings): void {
  const f = settingsForm.elements;
  (f.namedItem('stream') as HTMLInputElement).value = s.stream;
  (f.namedItem('http') as HTMLInputElement).value = s.http;
  (f.namedItem('rtmp') as HTMLInputElement).value = s.rtmp;
  (f.namedItem('public_host') as HTMLInputElement).value = s.public_host;
  for (const n of toggleNames) (f.namedItem(n) as HTMLInputElement).checked = s.notifications[n];
}

settingsForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = settingsForm.elements;
  const value = (n: string) => (f.namedItem(n) as HTMLInputElement).value.trim();
  const settings: Settings = {
    stream: value('stream'),
    http: value('http'),
    rtmp: value('rtmp'),
    public_host: value('public_host'),
    notifications: Object.fromEntries(
      toggleNames.map((n) => [n, (f.namedItem(n) as HTMLInputElement).checked]),
    ) as unknown as Settings['notifications'],
  };
  const note = $('settings-note');
  try {
    const saved = await invoke<{ restart_needed: boolean }>('settings_set', { settings });
    note.textContent = saved.restart_needed ? 'Saved. Quit and start OnAir again to apply.' : 'Saved.';
  } catch (err) {
    note.textContent = `Not saved: ${errorText(err)}`;
  }
});

const loginForm = $<HTMLFormElement>('matrix-login');
loginForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = loginForm.elements;
  const value = (n: string) => (f.namedItem(n) as HTMLInputElement).value.trim();
  const note = $('matrix-note');
  note.textContent = 'Logging in…';
  try {
    await invoke('matrix_login', { homeserver: value('homeserver'), user: value('user'), password: value('password') });
    (f.namedItem('password') as HTMLInputElement).value = '';
    note.textContent = 'Logged in. The session is kept in the system keyring.';
    await refreshStatus();
  } catch (err) {
    note.textContent = `Login failed: ${errorText(err)}`;
  }
});

$('matrix-logout').addEventListener('click', async () => {
  const note = $('matrix-note');
  try {
    await invoke('matrix_logout');
    note.textContent = 'Logged out.';
    await refreshStatus();
  } catch (err) {
    note.textContent = `Logout failed: ${errorText(err)}`;
  }
});

async function refreshStatus(): Promise<void> {
  const st = await invoke<ControlStatus>('status');
  const me = st.streams.find((s) => s.name === info.stream);
  if (me) {
    armed = me.armed;
    live = !!me.live;
    publishing = live;
    showTitle(me.title ?? '');
    if (me.live) {
      lastStats = me;
      renderHealth();
    }
  }
  renderMatrix(st.matrix.state, st.matrix.user);
  renderReach(st);
  if (st.matrix.homeserver) {
    const f = loginForm.elements;
    const hs = f.namedItem('homeserver') as HTMLInputElement;
    const user = f.namedItem('user') as HTMLInputElement;
    if (!hs.value) hs.value = st.matrix.homeserver;
    if (!user.value) user.value = st.matrix.user;
  }
  renderState();
}

/** Reach or HTTPS changed: the link to share (and its QR code) may have too. */
async function onReach(): Promise<void> {
  try {
    info = await invoke<AppInfo>('app_info');
    handle.info = info;
    renderShare();
    await refreshStatus();
  } catch (e) {
    showError(errorText(e));
  }
}

// ---------------------------------------------------------------------------
// Start

async function start(): Promise<void> {
  // Subscribe first, so nothing between the snapshot and the subscription is lost.
  await listen<EngineEvent>('engine', onEvent);
  info = await invoke<AppInfo>('app_info');
  handle.info = info;
  armed = info.armed;
  renderShare();
  handle.chat = mountChat();
  await refreshStatus();
  handle.view = mountPlayer($('player'), {
    stream: info.stream,
    origin: info.engine_url,
    ...playerOptionsFromQuery(),
  });
  // The preview's own sound would echo the streamer's microphone: it starts muted (the player's default).
  try {
    fillSettings(await invoke<Settings>('settings_get'));
  } catch (e) {
    $('settings-note').textContent = `Settings unavailable: ${errorText(e)}`;
  }
  await loadObsSetup();
  await refreshRestream();
  renderHealth();
  // Keep the graph's time axis moving between stats events.
  setInterval(() => drawGraph($<HTMLCanvasElement>('bitrate-graph'), history, Date.now()), 2000);
}

start().catch((e) => showError(`OnAir could not start its window: ${errorText(e)}`));
