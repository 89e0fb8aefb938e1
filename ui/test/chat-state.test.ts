// The guest chat's follow state and the view's scroll decisions (src/chat-state.ts): events shown
// once by id across history, long-polls and sends; `/events` refused → `/messages` polling; the
// long-poll budget; the title; retry delays; following the bottom of the list.

import { describe, expect, it } from 'vitest';
import {
  FollowState,
  LONG_POLL_BURST,
  LONG_POLL_WINDOW_MS,
  LongPollBudget,
  MAX_STREAM_REFUSALS,
  STICKY_PX,
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
} from '../src/chat-state';

const msg = (id: string, ts = 0, own = false) => ({ id, ts, own });
const ids = (ms: { id: string }[]) => ms.map((m) => m.id);

/** A follow state that read the history with a stream token, as GuestChat does. */
function following(): FollowState {
  const f = new FollowState();
  expect(f.beginRead()).toBe(true);
  f.historyRead('hist-1', 'stream-1');
  f.follow();
  return f;
}

describe('FollowState: each event once', () => {
  it('drops events the history already showed when a long-poll brings them again', () => {
    const f = following();
    expect(ids(f.fresh([msg('$a'), msg('$b'), msg('$c')]))).toEqual(['$a', '$b', '$c']);
    // The token was taken before the history: the first long-poll overlaps it.
    expect(ids(f.fresh([msg('$c'), msg('$d')]))).toEqual(['$d']);
    expect(ids(f.fresh([msg('$d')]))).toEqual([]);
  });

  it('an event twice in one batch shows once, in first-seen order', () => {
    const f = following();
    expect(ids(f.fresh([msg('$x'), msg('$y'), msg('$x'), msg('$z'), msg('$y')]))).toEqual(['$x', '$y', '$z']);
  });

  it('a re-read of the history (after a refused long-poll) brings only what is new', () => {
    const f = following();
    f.fresh([msg('$1'), msg('$2')]);
    f.fresh([msg('$3')]); // live
    f.longPollRefused();
    expect(f.beginRead()).toBe(true);
    f.historyRead('hist-2', 'stream-2');
    expect(ids(f.fresh([msg('$1'), msg('$2'), msg('$3'), msg('$4')]))).toEqual(['$4']);
  });

  it('our own message: the event id from the send answer, or the copy the follow brought first', () => {
    const f = following();
    // The answer came first: the local copy becomes the event; the follow's copy is dropped.
    expect(f.ownEventSeen('$mine1')).toBe(false);
    expect(ids(f.fresh([msg('$mine1', 0, true)]))).toEqual([]);
    // The long-poll was quicker: that copy is shown, the local one goes.
    expect(ids(f.fresh([msg('$mine2', 0, true)]))).toEqual(['$mine2']);
    expect(f.ownEventSeen('$mine2')).toBe(true);
  });

  it('keeps the objects it is given (no copies)', () => {
    const f = following();
    const a = msg('$a');
    expect(f.fresh([a])[0]).toBe(a);
  });
});

describe('FollowState: long-poll /events, or poll /messages', () => {
  it('follows by long-poll from the token taken before the history', () => {
    const f = new FollowState();
    expect(f.mode).toBeNull();
    expect(f.beginRead()).toBe(true);
    f.historyRead('hist-1', 'stream-1');
    expect(f.mode).toBeNull(); // not following until the read is complete
    f.follow();
    expect(f.mode).toBe('events');
    expect(f.streamFrom).toBe('stream-1');
    expect(f.from).toBe('hist-1');
  });

  it('each answer moves the tokens on; an answer without one keeps the old', () => {
    const f = following();
    f.longPollAnswered('stream-2');
    expect(f.streamFrom).toBe('stream-2');
    f.longPollAnswered(undefined);
    expect(f.streamFrom).toBe('stream-2');
    f.pollAnswered('hist-2');
    f.pollAnswered(42);
    expect(f.from).toBe('hist-2');
  });

  it('a homeserver that refuses /events from the start is polled from the history token', () => {
    const f = new FollowState();
    expect(f.beginRead()).toBe(true);
    f.eventsUnavailable(); // e.g. 404 M_UNRECOGNIZED on /events?timeout=0
    f.historyRead('hist-1', null);
    f.follow();
    expect(f.mode).toBe('messages');
    // A later re-read does not ask /events again.
    expect(f.beginRead()).toBe(false);
    expect(f.mode).toBeNull();
  });

  it(`a long-poll refused ${MAX_STREAM_REFUSALS} times in a row switches to /messages polling`, () => {
    const f = following();
    f.longPollRefused(); // e.g. 400 on a token the homeserver no longer takes
    expect(f.beginRead()).toBe(true); // a fresh token first
    f.historyRead('hist-2', 'stream-2');
    f.follow();
    expect(f.mode).toBe('events');
    for (let i = 1; i < MAX_STREAM_REFUSALS; i++) f.longPollRefused();
    expect(f.beginRead()).toBe(false);
    f.historyRead('hist-3', null);
    f.follow();
    expect(f.mode).toBe('messages');
    expect(f.from).toBe('hist-3');
  });

  it('a long-poll that answers resets the refusal count', () => {
    const f = following();
    for (let round = 0; round < 5; round++) {
      for (let i = 1; i < MAX_STREAM_REFUSALS; i++) f.longPollRefused();
      expect(f.beginRead()).toBe(true);
      f.historyRead(`hist-${round}`, `stream-${round}`);
      f.follow();
      f.longPollAnswered(`stream-${round}b`);
    }
    expect(f.mode).toBe('events');
  });

  it('waits the long-poll budget while long-polling, the poll interval while polling', () => {
    const f = following();
    for (let i = 0; i < LONG_POLL_BURST; i++) f.longPollStarted(1000 + i);
    expect(f.nextDelayMs(1000 + LONG_POLL_BURST, 1000)).toBe(LONG_POLL_WINDOW_MS - LONG_POLL_BURST);
    const p = new FollowState();
    p.beginRead();
    p.eventsUnavailable();
    p.historyRead('h', null);
    p.follow();
    expect(p.nextDelayMs(0, 1000)).toBe(1000);
  });

  it('right after a failure a long-poll does not wait on the homeserver', () => {
    expect(longPollWaitMs(true, 30000)).toBe(30000);
    expect(longPollWaitMs(false, 30000)).toBe(0);
  });
});

describe('refusesEvents', () => {
  it('400, 404, 405, 501 and M_UNRECOGNIZED mean /events is not for us', () => {
    for (const status of [400, 404, 405, 501]) expect(refusesEvents(status, '')).toBe(true);
    expect(refusesEvents(403, 'M_UNRECOGNIZED')).toBe(true);
  });

  it('other errors are failures to retry, not a refusal', () => {
    for (const [status, errcode] of [
      [401, 'M_UNKNOWN_TOKEN'],
      [403, 'M_FORBIDDEN'],
      [429, 'M_LIMIT_EXCEEDED'],
      [500, 'M_UNKNOWN'],
      [502, ''],
    ] as const) {
      expect(refusesEvents(status, errcode)).toBe(false);
    }
  });
});

describe('LongPollBudget: at most 5 long-polls start in any 5 s', () => {
  it('lets a burst of 5 go at once, then waits for the oldest to leave the window', () => {
    const b = new LongPollBudget();
    const t0 = 10_000;
    for (let i = 0; i < LONG_POLL_BURST; i++) {
      expect(b.delayMs(t0 + i * 10)).toBe(0);
      b.started(t0 + i * 10);
    }
    expect(b.delayMs(t0 + 50)).toBe(LONG_POLL_WINDOW_MS - 50);
    expect(b.delayMs(t0 + LONG_POLL_WINDOW_MS - 1)).toBe(1);
    expect(b.delayMs(t0 + LONG_POLL_WINDOW_MS)).toBe(0);
  });

  it('a room busy all the time gets one long-poll a second at most', () => {
    const b = new LongPollBudget();
    let now = 0;
    const starts: number[] = [];
    // Every long-poll answers at once (a busy room); the loop waits what the budget says.
    for (let i = 0; i < 1000 && now < 60_000; i++) {
      const wait = b.delayMs(now);
      expect(wait).toBeGreaterThanOrEqual(0);
      now += wait;
      b.started(now);
      starts.push(now);
      now += 5; // the answer's round trip
    }
    for (let i = LONG_POLL_BURST; i < starts.length; i++) {
      expect(starts[i] - starts[i - LONG_POLL_BURST]).toBeGreaterThanOrEqual(LONG_POLL_WINDOW_MS);
    }
    // A burst at the start, then about one a second.
    expect(starts.length).toBeLessThanOrEqual(LONG_POLL_BURST + 60);
    expect(starts.length).toBeGreaterThanOrEqual(60);
  });

  it('every 5 s window holds at most 5 starts, whatever the timing', () => {
    const b = new LongPollBudget();
    const starts: number[] = [];
    let now = 0;
    // Answers after varying waits (0 … 2.9 s), deterministic.
    for (let i = 0; i < 200; i++) {
      const wait = b.delayMs(now);
      expect(wait).toBeGreaterThanOrEqual(0);
      now += wait;
      b.started(now);
      starts.push(now);
      now += (i * 7919) % 2900;
    }
    for (let i = 0; i < starts.length; i++) {
      const inWindow = starts.filter((t) => t >= starts[i] && t < starts[i] + LONG_POLL_WINDOW_MS);
      expect(inWindow.length).toBeLessThanOrEqual(LONG_POLL_BURST);
    }
  });

  it('a quiet room (30 s long-polls) never waits', () => {
    const b = new LongPollBudget();
    for (let now = 0; now < 300_000; now += 30_000) {
      expect(b.delayMs(now)).toBe(0);
      b.started(now);
    }
  });
});

describe('the title', () => {
  it('roomNameOf: the trimmed name, or null for none, empty or not a string', () => {
    expect(roomNameOf({ name: '  Friday show ' })).toBe('Friday show');
    expect(roomNameOf({ name: '   ' })).toBeNull();
    expect(roomNameOf({ name: 7 })).toBeNull();
    expect(roomNameOf({})).toBeNull();
    expect(roomNameOf(null)).toBeNull();
  });

  it('the first read always tells the page; live events only when the title changed', () => {
    const t = new TitleState();
    expect(t.update(null, true)).toBe(true); // the room has no name: the page shows its own
    expect(t.update(null, false)).toBe(false);
    expect(t.update('Show', false)).toBe(true);
    expect(t.current).toBe('Show');
    expect(t.update('Show', false)).toBe(false); // the same m.room.name again (e.g. a re-read)
    expect(t.update('Show', true)).toBe(true);
    expect(t.update(null, false)).toBe(true);
    expect(t.current).toBeNull();
  });

  it('says who changed or removed it', () => {
    expect(titleChangeLine('Ada', 'New show')).toBe('Ada changed the title to “New show”');
    expect(titleChangeLine('Ada', null)).toBe('Ada removed the title');
  });
});

describe('retry delays', () => {
  it('back off per kind, doubling up to each cap', () => {
    const seq = (kind: Parameters<typeof chatRetryDelayMs>[0]) =>
      Array.from({ length: 8 }, (_, i) => chatRetryDelayMs(kind, i + 1));
    expect(seq('unreachable')).toEqual([1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000]);
    expect(seq('no-room')).toEqual([5000, 10000, 20000, 30000, 30000, 30000, 30000, 30000]);
    expect(seq('unreadable')).toEqual([5000, 10000, 20000, 40000, 60000, 60000, 60000, 60000]);
    expect(seq('other')).toEqual([2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    expect(seq('guests-forbidden').every((d) => d === 60000)).toBe(true);
    expect(seq('session-gone').every((d) => d === 200)).toBe(true);
  });

  it('429: retry_after_ms, else Retry-After seconds, else 1 s; within 50 ms … 30 s', () => {
    expect(rateLimitDelayMs(1234, '9')).toBe(1234);
    expect(rateLimitDelayMs(undefined, '2')).toBe(2000);
    expect(rateLimitDelayMs(undefined, null)).toBe(1000);
    expect(rateLimitDelayMs(undefined, 'Wed, 21 Oct 2015 07:28:00 GMT')).toBe(1000);
    expect(rateLimitDelayMs(undefined, '0')).toBe(1000);
    expect(rateLimitDelayMs(1, null)).toBe(50);
    expect(rateLimitDelayMs(3_600_000, null)).toBe(30000);
    expect(rateLimitDelayMs(undefined, '120')).toBe(30000);
  });
});

describe('following the bottom of the list', () => {
  it('at the bottom means within STICKY_PX of it', () => {
    const list = { scrollHeight: 2000, clientHeight: 500, scrollTop: 1500 };
    expect(nearBottom(list)).toBe(true);
    expect(nearBottom({ ...list, scrollTop: 1500 - STICKY_PX })).toBe(true);
    expect(nearBottom({ ...list, scrollTop: 1500 - STICKY_PX - 1 })).toBe(false);
    // A list shorter than its box is always at the bottom.
    expect(nearBottom({ scrollHeight: 100, clientHeight: 500, scrollTop: 0 })).toBe(true);
  });

  it('a reader who scrolled up is not pulled down by others, but is by their own message', () => {
    expect(followsNew(true, [msg('$a')])).toBe(true);
    expect(followsNew(false, [msg('$a'), msg('$b')])).toBe(false);
    expect(followsNew(false, [msg('$a'), msg('local:1', 0, true)])).toBe(true);
  });
});

describe('historyInsertIndex: history in timestamp order among what is shown', () => {
  /** Inserts history messages one by one as ChatView does; returns the shown ids. */
  function show(shown: { id: string; ts: number }[], history: { id: string; ts: number }[]): string[] {
    const list = [...shown];
    for (const m of history) list.splice(historyInsertIndex(list.map((x) => x.ts), m.ts), 0, m);
    return ids(list);
  }

  it('goes to the end of an empty or older list', () => {
    expect(historyInsertIndex([], 5)).toBe(0);
    expect(historyInsertIndex([1, 2, 3], 5)).toBe(3);
  });

  it('goes before the first newer message (after equal timestamps)', () => {
    expect(historyInsertIndex([1, 3, 5], 4)).toBe(2);
    expect(historyInsertIndex([1, 3, 3, 5], 3)).toBe(3);
    expect(historyInsertIndex([10, 20], 1)).toBe(0);
  });

  it('history arriving after live messages (a re-read) goes before them', () => {
    const live = [msg('$live1', 500), msg('$live2', 600)];
    expect(show(live, [msg('$h1', 100), msg('$h2', 200)])).toEqual(['$h1', '$h2', '$live1', '$live2']);
  });

  it('history out of order ends up in timestamp order', () => {
    const history = [msg('$c', 300), msg('$a', 100), msg('$d', 400), msg('$b', 200)];
    expect(show([msg('$live', 1000)], history)).toEqual(['$a', '$b', '$c', '$d', '$live']);
  });
});
