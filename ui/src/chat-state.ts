// The guest chat's follow state and the chat view's scroll decisions, without DOM, network or
// timers: how new events are followed (long-polling `/events`, or polling `/messages` when the
// homeserver refuses `/events`) and from which tokens, the request budget of the long-polls,
// events shown once by event id across the history, the long-polls and our own sends, the
// room title, the retry schedule, and whether the message list follows new messages.
// GuestChat and ChatView (chat.ts) tell it what happened, with the time, and do what it answers.

/**
 * `events`: long-polling `/events` (the normal way); `messages`: polling `/messages?dir=f` (the
 * homeserver refuses `/events`); null: not following yet.
 */
export type FollowMode = 'events' | 'messages' | null;

/**
 * At most LONG_POLL_BURST long-polls start in any LONG_POLL_WINDOW_MS: events a few at a time
 * show at once, and a room busy all the time costs at most one request a second per viewer, as
 * the old polling did (a quiet room: one per 30 s).
 */
export const LONG_POLL_BURST = 5;
export const LONG_POLL_WINDOW_MS = 5000;
/** A long-poll refused this many times in a row (after a fresh token each time): fall back to `/messages`. */
export const MAX_STREAM_REFUSALS = 2;

/**
 * The homeserver does not do `/events` (for us): not implemented, unknown endpoint, or a
 * request it will not take.
 */
export function refusesEvents(status: number, errcode: string): boolean {
  return status === 400 || status === 404 || status === 405 || status === 501 || errcode === 'M_UNRECOGNIZED';
}

/**
 * How long one `/events` request waits on the homeserver: the full long-poll while all is well;
 * right after a failure none (`timeout=0`), so a homeserver that is back shows as such at once.
 */
export function longPollWaitMs(healthy: boolean, longPollMs: number): number {
  return healthy ? longPollMs : 0;
}

/** The long-polls started in the last LONG_POLL_WINDOW_MS, and how long the next one waits. */
export class LongPollBudget {
  private readonly starts: number[] = [];

  /** A long-poll starts at `now` (ms). */
  started(now: number): void {
    this.starts.push(now);
  }

  /** How long the next long-poll waits to keep within LONG_POLL_BURST per LONG_POLL_WINDOW_MS. */
  delayMs(now: number): number {
    const starts = this.starts;
    while (starts.length && starts[0] <= now - LONG_POLL_WINDOW_MS) starts.shift();
    return starts.length < LONG_POLL_BURST ? 0 : starts[0] + LONG_POLL_WINDOW_MS - now;
  }
}

/**
 * How the room is followed: the mode, the `/messages` and `/events` tokens, refusals of
 * `/events`, the long-poll budget, and the event ids shown already.
 *
 * The read starts with a stream token for "now" (unless `/events` was refused), then the history
 * and its token; new events come from that stream token (or from the history's token when
 * `/events` is refused). An event that arrives twice (the history and a long-poll overlap, a poll
 * brings our own message before the send answered, a re-read after a refusal) is shown once.
 */
export class FollowState {
  mode: FollowMode = null;
  /** `/messages?dir=f` token (the fallback). */
  from: string | null = null;
  /** `/events` stream token: the next long-poll's `from`. */
  streamFrom: string | null = null;
  /** The homeserver refused `/events`: follow with `/messages` from now on. */
  private eventsRefused = false;
  /** Long-polls refused in a row (each retried after a fresh token). */
  private refusals = 0;
  private readonly budget = new LongPollBudget();
  private readonly seen = new Set<string>();

  /** A (re)read of the room begins. True: ask `/events` for a stream token first. */
  beginRead(): boolean {
    this.mode = null;
    return !this.eventsRefused;
  }

  /** The homeserver refuses `/events` (or gave no token): poll `/messages` from now on. */
  eventsUnavailable(): void {
    this.eventsRefused = true;
  }

  /** The history was read: its token, and the stream token asked for before it (null: none). */
  historyRead(historyToken: string, streamToken: string | null): void {
    this.from = historyToken;
    this.streamFrom = streamToken;
  }

  /** The read is complete: follow by long-poll when there is a stream token, else by polling. */
  follow(): void {
    this.mode = this.streamFrom ? 'events' : 'messages';
  }

  /** A long-poll starts at `now` (ms). */
  longPollStarted(now: number): void {
    this.budget.started(now);
  }

  /**
   * The homeserver refused a long-poll (a token it no longer takes, or `/events` gone): the room
   * is read again, with a fresh token, or by polling once this keeps happening.
   */
  longPollRefused(): void {
    if (++this.refusals >= MAX_STREAM_REFUSALS) this.eventsRefused = true;
  }

  /** A long-poll answered; `end` is the next `from`. */
  longPollAnswered(end: unknown): void {
    this.refusals = 0;
    if (typeof end === 'string') this.streamFrom = end;
  }

  /** A `/messages?dir=f` poll answered; `end` is the next `from`. */
  pollAnswered(end: unknown): void {
    if (typeof end === 'string') this.from = end;
  }

  /** How long to wait before the next follow request: the long-poll budget, or the poll interval. */
  nextDelayMs(now: number, pollMs: number): number {
    return this.mode === 'events' ? this.budget.delayMs(now) : pollMs;
  }

  /** The messages not shown yet, each once and in the given order; they count as shown from now on. */
  fresh<T extends { id: string }>(msgs: readonly T[]): T[] {
    const out: T[] = [];
    for (const m of msgs) {
      if (this.seen.has(m.id)) continue;
      this.seen.add(m.id);
      out.push(m);
    }
    return out;
  }

  /**
   * Our own message got its event id. True: the follow brought it first (that copy is shown);
   * false: the local copy becomes the event.
   */
  ownEventSeen(eventId: string): boolean {
    if (this.seen.has(eventId)) return true;
    this.seen.add(eventId);
    return false;
  }
}

/** `m.room.name` content → the title: the trimmed name, or null when there is none. */
export function roomNameOf(content: { name?: unknown } | null | undefined): string | null {
  const name = content?.name;
  return typeof name === 'string' && name.trim() ? name.trim() : null;
}

/** The room title as last told to the page. */
export class TitleState {
  current: string | null = null;

  /**
   * A title from the room state (`force`: tell it even when unchanged, the first read) or from a
   * live `m.room.name` event. True: the page is told (and a live change gets a line in the chat).
   */
  update(title: string | null, force: boolean): boolean {
    if (!force && title === this.current) return false;
    this.current = title;
    return true;
  }
}

/** The chat line of a live title change. */
export function titleChangeLine(who: string, title: string | null): string {
  return title ? `${who} changed the title to “${title}”` : `${who} removed the title`;
}

/** Why the guest chat's loop failed (chat.ts classifies the error). */
export type ChatFailure =
  /** The homeserver does not answer. */
  | 'unreachable'
  /** It refuses guest accounts. */
  | 'guests-forbidden'
  /** The guest session is gone: a new guest at once. */
  | 'session-gone'
  /** The room was not found (yet). */
  | 'no-room'
  /** The room cannot be read (403 before the first read). */
  | 'unreadable'
  | 'other';

/** How long the guest chat waits after its `failures`-th failure in a row (1, 2, …). */
export function chatRetryDelayMs(kind: ChatFailure, failures: number): number {
  const backoff = (base: number, max: number) => Math.min(max, base * 2 ** Math.min(failures - 1, 6));
  switch (kind) {
    case 'unreachable':
      return backoff(1000, 10000);
    case 'guests-forbidden':
      return 60000;
    case 'session-gone':
      return 200;
    case 'no-room':
      return backoff(5000, 30000);
    case 'unreadable':
      return backoff(5000, 60000);
    case 'other':
      return backoff(2000, 30000);
  }
}

/**
 * How long to wait out a 429: the body's `retry_after_ms`, else the `Retry-After` header
 * (seconds), else 1 s; never below 50 ms nor above 30 s.
 */
export function rateLimitDelayMs(retryAfterMs: unknown, retryAfterHeader: string | null): number {
  const header = Number(retryAfterHeader);
  const ms =
    typeof retryAfterMs === 'number'
      ? retryAfterMs
      : Number.isFinite(header) && header > 0
        ? header * 1000
        : 1000;
  return Math.min(Math.max(ms, 50), 30000);
}

/** A reader this close to the bottom (px) is "at the bottom" and follows new messages. */
export const STICKY_PX = 48;

/** Whether the message list is scrolled to (or near) its bottom. */
export function nearBottom(list: { scrollHeight: number; scrollTop: number; clientHeight: number }): boolean {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= STICKY_PX;
}

/**
 * Whether the list scrolls to new messages: when the reader is at the bottom, or when they
 * wrote one of them. Otherwise they scrolled up to read, and a "new messages" button shows.
 */
export function followsNew(atBottom: boolean, msgs: readonly { own?: boolean }[]): boolean {
  return atBottom || msgs.some((m) => m.own);
}

/**
 * Where a history message goes in the shown list (timestamps in list order): before the first
 * message that is newer, else at the end. History can arrive after live messages (a re-read),
 * and a page of it in any order.
 */
export function historyInsertIndex(shownTs: readonly number[], ts: number): number {
  const i = shownTs.findIndex((t) => t > ts);
  return i < 0 ? shownTs.length : i;
}
