//! HTTP caching of LL-HLS answers, so that a cache in front of the server (nginx `proxy_cache`,
//! Varnish, a CDN) collapses many players into one origin request per object: the
//! `Cache-Control` of each kind of answer ([`cache_control`]) and the `ETag` of playlists
//! ([`etag`], [`if_none_match`]). Pure: the server says which [`Answer`] it gives.
//!
//! * **Media** (init segments, parts, segments): their URIs carry the publish session and never
//!   name other bytes, so they are `public, max-age=31536000, immutable`.
//! * **Blocking playlist reloads** (`llhls.m3u8?_HLS_msn=M&_HLS_part=P`): every player asking
//!   that URL may get the same playlist (any playlist holding part `M.P` answers it), so a cache
//!   may keep it for as long as players keep asking it. Players at the live edge ask a given
//!   URL within about one PART-HOLD-BACK (3 part targets) of each other; a player further behind
//!   asks URLs the origin answers at once anyway. [`blocking_max_age_s`] is twice the
//!   PART-HOLD-BACK rounded up, at least 2 s (3 s with 334 ms parts): enough for the spread of
//!   players and a cache's lock wait, short enough that a stream restarted under the same name
//!   (whose media sequence numbers start at 0 again) does not meet the old answers.
//! * **Non-blocking playlists** (`llhls.m3u8` without `_HLS_msn`, `playlist.m3u8`): they change
//!   with every part (every segment for the plain one). `s-maxage=1` — one second is the
//!   smallest lifetime HTTP can state — lets a shared cache collapse a burst of players
//!   starting at once; `max-age=0` keeps browsers from reusing a stale copy (they revalidate
//!   with the `ETag` instead).
//! * **A playlist answered 404** (the stream is offline, or not playable yet): `s-maxage=1` too,
//!   so players polling an offline stream through a cache do not all reach the origin; a stream
//!   going live is seen at most a second or two later.
//! * **Every other error** (a part or segment not there, 400, 503): `no-cache` — not stored. A
//!   404 for a part that does not exist *yet* must never be served once it does.
//!
//! No answer varies with a request header (no compression, `Access-Control-Allow-Origin: *`),
//! so none carries `Vary`.

/// What kind of answer a response is, for its `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An init segment, part or segment (also one streamed while it is being completed).
    Media,
    /// `llhls.m3u8` with `_HLS_msn` (and maybe `_HLS_part`).
    BlockingPlaylist,
    /// `llhls.m3u8` without `_HLS_msn`, or `playlist.m3u8`.
    Playlist,
    /// A playlist request answered 404: the stream is offline or not playable yet.
    PlaylistNotFound,
    /// Any other error.
    Error,
}

/// The `max-age` of a blocking playlist reload answer (see the module documentation): twice
/// the PART-HOLD-BACK (3 × `part_target_ms`), rounded up to whole seconds, at least 2.
pub fn blocking_max_age_s(part_target_ms: u32) -> u64 {
    (u64::from(part_target_ms) * 6).div_ceil(1000).max(2)
}

/// The `Cache-Control` value of `answer` for a stream with parts of `part_target_ms`.
pub fn cache_control(answer: Answer, part_target_ms: u32) -> String {
    match answer {
        Answer::Media => "public, max-age=31536000, immutable".into(),
        Answer::BlockingPlaylist => format!("public, max-age={}", blocking_max_age_s(part_target_ms)),
        Answer::Playlist | Answer::PlaylistNotFound => "public, max-age=0, s-maxage=1".into(),
        Answer::Error => "no-cache".into(),
    }
}

/// A strong `ETag` for a playlist body (quoted): a 64-bit FNV-style hash of its bytes, taken a
/// word at a time, and its length. Different playlists get different tags (they are ours, not
/// chosen by an attacker, so a non-cryptographic hash is enough).
pub fn etag(body: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in body.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    format!("\"{h:016x}-{:x}\"", body.len())
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110
/// §13.1.2 asks: `W/` prefixes are ignored; `*` matches anything).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    header.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_per_answer() {
        assert_eq!(cache_control(Answer::Media, 334), "public, max-age=31536000, immutable");
        assert_eq!(cache_control(Answer::BlockingPlaylist, 334), "public, max-age=3");
        assert_eq!(cache_control(Answer::Playlist, 334), "public, max-age=0, s-maxage=1");
        assert_eq!(cache_control(Answer::PlaylistNotFound, 334), "public, max-age=0, s-maxage=1");
        assert_eq!(cache_control(Answer::Error, 334), "no-cache");
        assert_eq!(blocking_max_age_s(100), 2);
        assert_eq!(blocking_max_age_s(200), 2);
        assert_eq!(blocking_max_age_s(250), 2);
        assert_eq!(blocking_max_age_s(334), 3);
        assert_eq!(blocking_max_age_s(500), 3);
        assert_eq!(blocking_max_age_s(2000), 12);
        assert_eq!(blocking_max_age_s(u32::MAX), 25_769_804);
    }

    #[test]
    fn etags_follow_the_bytes() {
        let a = etag(b"#EXTM3U\n#EXT-X-VERSION:6\n");
        assert_eq!(a, etag(b"#EXTM3U\n#EXT-X-VERSION:6\n"));
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() > 10, "{a}");
        assert_ne!(a, etag(b"#EXTM3U\n#EXT-X-VERSION:7\n"));
        // Same words, a trailing zero byte more: the length tells them apart.
        assert_ne!(etag(b"abc"), etag(b"abc\0"));
        assert_ne!(etag(b""), etag(b"\0"));
        let many: std::collections::HashSet<String> = (0..10_000u32)
            .map(|i| etag(format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s/{i}.0.m4s\"").as_bytes()))
            .collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let t = "\"00ff-1a\"";
        assert!(if_none_match("\"00ff-1a\"", t));
        assert!(if_none_match("W/\"00ff-1a\"", t));
        assert!(if_none_match("\"x\", \"00ff-1a\"", t));
        assert!(if_none_match("*", t));
        assert!(!if_none_match("\"00ff-1b\"", t));
        assert!(!if_none_match("", t));
        assert!(!if_none_match("00ff-1a", t), "an unquoted tag is not the same");
    }
}
