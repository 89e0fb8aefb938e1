// Stream health for the window: a bitrate graph over the last minutes, drawn on
// a canvas from the engine's pushed `stats` events, and the figures beside it.

import type { StreamStatus } from './app-bridge';

/** How much history the graph shows. */
export const GRAPH_WINDOW_MS = 5 * 60 * 1000;
/** A keyframe interval above this makes WebRTC viewers wait too long to start. */
export const MAX_GOOD_KEYINT_S = 2.5;

export interface Sample {
  t: number;
  kbps: number;
}

/** Bitrate samples, oldest first, trimmed to the graph window. */
export class BitrateHistory {
  readonly samples: Sample[] = [];

  add(t: number, kbps: number): void {
    this.samples.push({ t, kbps });
    const from = t - GRAPH_WINDOW_MS;
    while (this.samples.length > 0 && this.samples[0].t < from) this.samples.shift();
  }

  max(): number {
    return this.samples.reduce((m, s) => Math.max(m, s.kbps), 0);
  }
}

/** A round axis top above `max` kbps (500, 1000, 2000, 2500, 5000, …). */
export function axisTop(max: number): number {
  const steps = [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000, 50000];
  return steps.find((s) => s >= max * 1.1) ?? Math.ceil(max / 10000) * 10000;
}

export function formatKbps(kbps: number): string {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mb/s` : `${Math.round(kbps)} kb/s`;
}

/** Draws the history on `canvas` (device-pixel sharp). `now`: the right edge. */
export function drawGraph(canvas: HTMLCanvasElement, history: BitrateHistory, now: number): void {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const top = axisTop(history.max());
  const x = (t: number) => cssW - ((now - t) / GRAPH_WINDOW_MS) * cssW;
  const y = (kbps: number) => cssH - 4 - (kbps / top) * (cssH - 18);

  // Grid: quarters of the axis, and a line per minute.
  ctx.strokeStyle = 'rgba(138, 145, 163, 0.18)';
  ctx.lineWidth = 1;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = 'rgba(138, 145, 163, 0.9)';
  for (let i = 1; i <= 4; i++) {
    const v = (top * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, yy);
    ctx.lineTo(cssW, yy);
    ctx.stroke();
    if (i % 2 === 0) ctx.fillText(formatKbps(v), 4, yy - 3);
  }
  for (let m = 1; m < GRAPH_WINDOW_MS / 60000; m++) {
    const xx = Math.round(x(now - m * 60000)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xx, 0);
    ctx.lineTo(xx, cssH);
    ctx.stroke();
  }

  const pts = history.samples;
  if (pts.length === 0) return;
  // Area under the line, then the line.
  ctx.beginPath();
  ctx.moveTo(x(pts[0].t), cssH);
  for (const p of pts) ctx.lineTo(x(p.t), y(p.kbps));
  ctx.lineTo(x(pts[pts.length - 1].t), cssH);
  ctx.closePath();
  ctx.fillStyle = 'rgba(255, 59, 78, 0.14)';
  ctx.fill();
  ctx.beginPath();
  pts.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.kbps)) : ctx.lineTo(x(p.t), y(p.kbps))));
  ctx.strokeStyle = '#ff3b4e';
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  ctx.stroke();
}

export interface HealthFigures {
  bitrate: string;
  fps: string;
  keyint: string;
  resolution: string;
  viewers: string;
  keyintWarning: boolean;
  bframes: boolean;
}

/** The figures of a `stats` status (or of an offline stream when null). */
export function figures(s: StreamStatus | null): HealthFigures {
  if (!s || !s.live) {
    return { bitrate: '–', fps: '–', keyint: '–', resolution: '–', viewers: '–', keyintWarning: false, bframes: false };
  }
  const fps = s.fps ?? s.video?.fps;
  const k = s.keyframe_interval_s;
  const w = s.video?.width;
  const h = s.video?.height;
  const webrtc = s.viewers?.webrtc ?? 0;
  const hls = s.viewers?.hls ?? 0;
  return {
    bitrate: typeof s.bitrate_kbps === 'number' ? formatKbps(s.bitrate_kbps) : '–',
    fps: typeof fps === 'number' && fps > 0 ? `${Number.isInteger(fps) ? fps : fps.toFixed(2)} fps` : '–',
    keyint: typeof k === 'number' && k > 0 ? `${k.toFixed(1)} s` : '–',
    resolution: w && h ? `${w}×${h}` : '–',
    viewers: `${webrtc + hls} (WebRTC ${webrtc} · HLS ${hls})`,
    keyintWarning: typeof k === 'number' && k > MAX_GOOD_KEYINT_S,
    bframes: !!s.bframes,
  };
}
