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

// The status and control APIs' types: generated from the engine's Rust types (ui/src/api/, kept
// up to date by the engine's ts_types test).
export type { StreamStatus } from './api/StreamStatus';
export type { ControlStatus } from './api/ControlStatus';
export type { EngineEvent } from './api/EngineEvent';

export interface NotifyToggles {
  went_live: boolean;
  publisher_dropped: boolean;
  stream_ended: boolean;
  obs_connected: boolean;
  chat_mention: boolean;
  restream_failing: boolean;
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
