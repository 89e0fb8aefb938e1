// What the desktop window says about reach (can viewers on the internet open the link?) and the
// first-start walkthrough, as plain functions of the engine's status: app.ts draws them, the
// unit tests (test/reach-view.test.ts) check the words and the step states.

import type { BudgetStatus } from './api/BudgetStatus';
import type { HttpsStatus } from './api/HttpsStatus';
import type { PortMapping } from './api/PortMapping';
import type { ReachState } from './api/ReachState';
import type { ReachStatus } from './api/ReachStatus';

export interface ReachView {
  state: ReachState;
  /** One line: who can watch. */
  headline: string;
  /** What to do about it, in plain words (may be empty). */
  advice: string[];
  /** "WebRTC UDP 8189 → 192.168.1.20:8189" lines: the ports to forward by hand. */
  toForward: string[];
  /** The same for the ports OnAir had the router open. */
  mapped: string[];
  /** The HTTPS line, or null when HTTPS is off. */
  https: string | null;
}

export function portLine(m: PortMapping): string {
  return `${m.purpose} ${m.protocol} ${m.external_port} → ${m.internal}`;
}

function date(unixS: number): string {
  return new Date(unixS * 1000).toISOString().slice(0, 10);
}

export function httpsLine(h: HttpsStatus): string | null {
  const what = h.domain ? ` for ${h.domain}` : '';
  switch (h.state) {
    case 'off':
      return null;
    case 'ok':
      return `HTTPS is on${what}` + (h.expires_unix_s ? ` (certificate valid until ${date(h.expires_unix_s)}).` : '.');
    case 'obtaining':
      return `HTTPS: getting a certificate${what}…`;
    case 'renewing':
      return `HTTPS: renewing the certificate${what}…`;
    case 'error':
      return `HTTPS has a problem${what}: ${h.error ?? 'unknown'}. Plain HTTP keeps working on your network meanwhile.`;
    default:
      return `HTTPS: ${h.state}${what}`;
  }
}

/**
 * The upload budget's line ("Upload: 12.4 of 20 Mb/s in use …"), or null when none is set (every
 * viewer is admitted; docs/budget.md).
 */
export function budgetLine(b: BudgetStatus): string | null {
  if (!(b.upload_mbps > 0)) return null;
  const mbps = (x: number) => (Math.round(x * 10) / 10).toString();
  let line = `Upload: ${mbps(b.used_mbps)} of ${mbps(b.upload_mbps)} Mb/s in use.`;
  if (b.refused > 0) {
    line += ` ${b.refused} new viewer${b.refused === 1 ? ' was' : 's were'} not let in directly (sent to your edge, or told the stream is full).`;
  }
  return line;
}

export function reachView(reach: ReachStatus, https: HttpsStatus): ReachView {
  const toForward = reach.ports_to_forward.map(portLine);
  const mapped = reach.mappings.map(portLine);
  const advice: string[] = [];
  let headline: string;
  switch (reach.state) {
    case 'checking':
      headline = 'Checking whether viewers on the internet can reach this PC…';
      break;
    case 'reachable':
      headline = 'Viewers on the internet can watch: share the link.';
      if (mapped.length > 0) advice.push('Your router forwards these ports to this PC while you are live (UPnP / NAT-PMP).');
      break;
    case 'lan_only':
      headline = 'Only viewers on your network can watch.';
      if (toForward.length > 0) {
        advice.push(
          "To let the internet in, forward these ports on your router to this PC (router's admin page → Port forwarding), or turn UPnP on in the router:",
        );
      }
      break;
    case 'cgnat':
      headline = 'Nobody outside your network can reach this PC: your provider shares one address among many customers (carrier-grade NAT).';
      advice.push(
        'WebRTC viewers can still connect through a TURN server (webrtc.turn_urls), and a server on the internet can carry the stream for you (restream). Or ask your provider for a public IPv4 address.',
      );
      break;
  }
  if (reach.advice && !advice.includes(reach.advice)) advice.push(reach.advice);
  return { state: reach.state, headline, advice, toForward, mapped, https: httpsLine(https) };
}

// ---------------------------------------------------------------------------
// First start: set up OBS → start streaming in OBS → Go live → share the link

export type StepState = 'done' | 'current' | 'todo';

export interface Step {
  id: 'obs' | 'stream' | 'live' | 'share';
  title: string;
  hint: string;
  state: StepState;
}

export interface Progress {
  /** OBS has the settings (one-click setup or profile succeeded, or OBS has connected once). */
  obsSetUp: boolean;
  /** OBS is streaming to OnAir now (connected, or knocking before Go live). */
  obsStreaming: boolean;
  /** Go live is on. */
  armed: boolean;
  /** The stream plays. */
  live: boolean;
  /** The viewer link was copied (or its QR shown and the stream live). */
  linkShared: boolean;
}

export function walkthrough(p: Progress): Step[] {
  const steps: Array<Omit<Step, 'state'> & { done: boolean }> = [
    {
      id: 'obs',
      title: 'Set up OBS',
      hint: 'Click “Set up OBS” (or copy the server and key into OBS → Settings → Stream).',
      done: p.obsSetUp || p.obsStreaming || p.live,
    },
    {
      id: 'stream',
      title: 'Start streaming in OBS',
      hint: 'In OBS, click “Start Streaming”.',
      done: p.obsStreaming || p.live,
    },
    { id: 'live', title: 'Go live', hint: 'Press “Go live” to put the stream on air.', done: p.live },
    { id: 'share', title: 'Share the link', hint: 'Copy the viewer link and send it to your viewers.', done: p.live && p.linkShared },
  ];
  let current = false;
  return steps.map(({ done, ...s }) => {
    if (done) return { ...s, state: 'done' };
    if (current) return { ...s, state: 'todo' };
    current = true;
    return { ...s, state: 'current' };
  });
}

export function allDone(steps: Step[]): boolean {
  return steps.every((s) => s.state === 'done');
}
