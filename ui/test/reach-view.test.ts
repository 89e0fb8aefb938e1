// The desktop window's reach panel and first-start walkthrough (src/reach-view.ts).

import { describe, expect, it } from 'vitest';
import type { HttpsStatus } from '../src/api/HttpsStatus';
import type { ReachStatus } from '../src/api/ReachStatus';
import { allDone, budgetLine, httpsLine, reachView, type Progress, walkthrough } from '../src/reach-view';

const off: HttpsStatus = {
  mode: 'off',
  state: 'off',
  domain: null,
  expires_unix_s: null,
  error: null,
  https_port: null,
  rtmps_port: null,
};

function reach(over: Partial<ReachStatus>): ReachStatus {
  return {
    state: 'checking',
    public_base: null,
    public_ip: null,
    router_external_ip: null,
    mapping: 'off',
    mappings: [],
    ports_to_forward: [],
    advice: '',
    ...over,
  };
}

describe('reach panel', () => {
  it('lists the exact ports to forward when the router would not', () => {
    const v = reachView(
      reach({
        state: 'lan_only',
        mapping: 'refused',
        ports_to_forward: [
          { purpose: 'HTTP', protocol: 'TCP', external_port: 8080, internal: '192.168.1.20:8080', lease_s: null },
          { purpose: 'WebRTC', protocol: 'UDP', external_port: 8189, internal: '192.168.1.20:8189', lease_s: null },
        ],
        advice: 'UPnP is off on the router.',
      }),
      off,
    );
    expect(v.headline).toBe('Only viewers on your network can watch.');
    expect(v.toForward).toEqual(['HTTP TCP 8080 → 192.168.1.20:8080', 'WebRTC UDP 8189 → 192.168.1.20:8189']);
    expect(v.advice[0]).toMatch(/forward these ports/);
    expect(v.advice).toContain('UPnP is off on the router.');
    expect(v.https).toBeNull();
  });

  it('says what still works behind carrier-grade NAT', () => {
    const v = reachView(reach({ state: 'cgnat', public_ip: '100.64.3.4' }), off);
    expect(v.headline).toMatch(/carrier-grade NAT/);
    expect(v.advice.join(' ')).toMatch(/TURN/);
    expect(v.advice.join(' ')).toMatch(/restream/);
  });

  it('shows the mapped ports when reachable, and the HTTPS state', () => {
    const v = reachView(
      reach({
        state: 'reachable',
        public_base: 'http://11.77.0.1:8080',
        mappings: [{ purpose: 'HTTP', protocol: 'TCP', external_port: 8080, internal: '192.168.77.10:8080', lease_s: 3600 }],
      }),
      { ...off, mode: 'acme', state: 'ok', domain: 'tv.example.org', expires_unix_s: 1_800_000_000 },
    );
    expect(v.headline).toMatch(/internet can watch/);
    expect(v.mapped).toEqual(['HTTP TCP 8080 → 192.168.77.10:8080']);
    expect(v.https).toBe('HTTPS is on for tv.example.org (certificate valid until 2027-01-15).');
    expect(httpsLine({ ...off, mode: 'acme', state: 'error', domain: 'tv.example.org', error: 'the CA cannot be reached' })).toBe(
      'HTTPS has a problem for tv.example.org: the CA cannot be reached. Plain HTTP keeps working on your network meanwhile.',
    );
  });
});

describe('first-start walkthrough', () => {
  const none: Progress = { obsSetUp: false, obsStreaming: false, armed: false, live: false, linkShared: false };
  const states = (p: Progress) => walkthrough(p).map((s) => s.state);

  it('goes step by step, one current step at a time', () => {
    expect(states(none)).toEqual(['current', 'todo', 'todo', 'todo']);
    expect(states({ ...none, obsSetUp: true })).toEqual(['done', 'current', 'todo', 'todo']);
    // OBS knocks before Go live: streaming counts, Go live is next.
    expect(states({ ...none, obsSetUp: true, obsStreaming: true })).toEqual(['done', 'done', 'current', 'todo']);
    expect(states({ ...none, obsSetUp: true, obsStreaming: true, armed: true, live: true })).toEqual([
      'done',
      'done',
      'done',
      'current',
    ]);
    const all = walkthrough({ obsSetUp: true, obsStreaming: true, armed: true, live: true, linkShared: true });
    expect(allDone(all)).toBe(true);
    expect(all.map((s) => s.title)).toEqual(['Set up OBS', 'Start streaming in OBS', 'Go live', 'Share the link']);
  });

  it('counts OBS as set up once it streams, even if set up by hand', () => {
    expect(states({ ...none, obsStreaming: true })).toEqual(['done', 'done', 'current', 'todo']);
    expect(states({ ...none, armed: true })).toEqual(['current', 'todo', 'todo', 'todo']);
  });
});

describe('budgetLine', () => {
  it('says nothing without a budget', () => {
    expect(budgetLine({ upload_mbps: 0, used_mbps: 3.2, refused: 0 })).toBeNull();
  });
  it('says what is in use and who was not let in', () => {
    expect(budgetLine({ upload_mbps: 20, used_mbps: 12.44, refused: 0 })).toBe('Upload: 12.4 of 20 Mb/s in use.');
    expect(budgetLine({ upload_mbps: 20, used_mbps: 19.96, refused: 1 })).toBe(
      'Upload: 20 of 20 Mb/s in use. 1 new viewer was not let in directly (sent to your edge, or told the stream is full).',
    );
    expect(budgetLine({ upload_mbps: 20, used_mbps: 19, refused: 3 })).toContain('3 new viewers were not let in');
  });
});
