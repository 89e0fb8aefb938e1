// The window's link to the Rust side: Tauri's global API (`app.withGlobalTauri`)
// — `invoke` for commands, `listen` for pushed events. The browser test defines
// the same `window.__TAURI__` over the engine's HTTP control API.

export interface TauriEvent<T> {
  event: string;
  payload: T;
}

export interface TauriGlobal {
  core: { invoke<T>(cmd: string, args?: Record<string, unknown>): Promise<T> };
  event: { listen<T>(event: string, handler: (e: TauriEvent<T>) => void): Promise<() => void> };
}

declare global {
  interface Window {
    __TAURI__?: TauriGlobal;
  }
}

function tauri(): TauriGlobal {
  const t = window.__TAURI__;
  if (!t) throw new Error('This page runs inside the OnAir app.');
  return t;
}

export function invoke<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  return tauri().core.invoke<T>(cmd, args);
}

export function listen<T>(event: string, handler: (payload: T) => void): Promise<() => void> {
  return tauri().event.listen<T>(event, (e) => handler(e.payload));
}

/** Puts `text` on the clipboard (tauri-plugin-clipboard-manager). */
export function copyText(text: string): Promise<void> {
  return invoke<void>('plugin:clipboard-manager|write_text', { text });
}

/** A command's error as text (commands reject with a string). */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return typeof e === 'string' ? e : JSON.stringify(e);
}

// ---------------------------------------------------------------------------
// What the commands return (see src-tauri/src/core.rs and the engine's control.rs)

export type TrayState = 'offline' | 'ready' | 'live';

export interface AppInfo {
  version: string;
  stream: string;
  engine_url: string;
  viewer_url: string;
  viewer_qr_svg: string;
  public_host_configured: boolean;
  obs: { server: string; stream_key: string; url: string };
  armed: boolean;
  require_go_live: boolean;
  tray: TrayState;
}

export interface StreamStatus {
  name?: string;
  live?: boolean;
  title?: string;
  video?: { codec?: string; width?: number; height?: number; fps?: number } | null;
  bitrate_kbps?: number | null;
  fps?: number | null;
  keyframe_interval_s?: number | null;
  bframes?: boolean;
  viewers?: { webrtc?: number; hls?: number };
  chat?: { homeserver: string; alias?: string | null; room_id?: string | null; status?: string } | null;
}

export interface ControlStatus {
  require_go_live: boolean;
  default_stream: string;
  viewer_base: string;
  matrix: { state: string; homeserver: string; user: string };
  streams: Array<StreamStatus & { armed: boolean }>;
}

export interface NotifyToggles {
  went_live: boolean;
  publisher_dropped: boolean;
  stream_ended: boolean;
  obs_connected: boolean;
  chat_mention: boolean;
}

export interface Settings {
  stream: string;
  http: string;
  rtmp: string;
  public_host: string;
  notifications: NotifyToggles;
}

// One-click OBS (src-tauri/src/obs.rs; the onair-obs crate's ApplyReport)

export type PasswordSource = 'environment' | 'keyring' | 'none';

export interface ObsSetupInfo {
  default_url: string;
  password: PasswordSource;
  profile_dir: string | null;
}

export interface ObsApplyReport {
  obs_version: string;
  websocket_version: string;
  profile: string;
  output_mode: 'Simple' | 'Advanced' | null;
  fps: number;
  keyint_frames: number;
  streaming: boolean;
  done: string[];
  verified: string[];
  mismatches: string[];
  todo: string[];
}

export interface ObsApplyOutcome {
  url: string;
  password: PasswordSource;
  report: ObsApplyReport;
  complete: boolean;
}

export interface ObsProfileOutcome {
  dir: string;
  files: string[];
  problems: string[];
  todo: string[];
}

/** The engine's events (`EngineEvent` in crates/engine/src/events.rs). */
export type EngineEvent =
  | { type: 'publish_started'; stream: string; remote: string }
  | { type: 'live'; stream: string }
  | { type: 'publish_ended'; stream: string; reason: string }
  | { type: 'publish_refused'; stream: string; reason: string }
  | { type: 'bframes'; stream: string }
  | { type: 'armed'; stream: string; armed: boolean }
  | { type: 'title'; stream: string; title: string }
  | {
      type: 'chat';
      stream: string;
      event_id: string;
      sender: string;
      display_name: string;
      body: string;
      ts_ms: number;
      mentions_me: boolean;
    }
  | { type: 'matrix'; state: string }
  | { type: 'stats'; stream: string; status: StreamStatus };
