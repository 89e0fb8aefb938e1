//! Resource names, in one place for the packager (which writes them into playlists) and the
//! server (which maps request paths back to resources).
//!
//! Playlists are served at `/live/<stream>/llhls.m3u8` and `/live/<stream>/playlist.m3u8`; the
//! URIs in them are relative: `<session>/init.mp4` (the first init segment; after a change of
//! codec configuration `<session>/init.<n>.mp4`), `<session>/<msn>.m4s` (a segment) and
//! `<session>/<msn>.<part>.m4s` (a part). Numbers are decimal without sign or leading zeros.

use std::fmt;

/// What a file name under `<session>/` designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `init.mp4` (0) or `init.<n>.mp4`: the init segment of a version of the configuration.
    Init(u32),
    /// `<msn>.m4s`
    Segment(u64),
    /// `<msn>.<part>.m4s`
    Part(u64, u32),
}

impl fmt::Display for Resource {
    /// The file name (without the session directory).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Init(0) => f.write_str("init.mp4"),
            Resource::Init(n) => write!(f, "init.{n}.mp4"),
            Resource::Segment(msn) => write!(f, "{msn}.m4s"),
            Resource::Part(msn, part) => write!(f, "{msn}.{part}.m4s"),
        }
    }
}

/// The playlist-relative URI of a resource: `<session>/<file name>`.
pub fn path(session: &str, r: Resource) -> String {
    format!("{session}/{r}")
}

/// Parses a file name (the last path component: `init.mp4`, `init.2.mp4`, `12.m4s`, `12.3.m4s`).
///
/// Only the canonical spelling is accepted (ASCII digits, no sign, no leading zeros, values in
/// range); anything else is `None`.
pub fn parse_uri(name: &str) -> Option<Resource> {
    if let Some(init) = name.strip_suffix(".mp4") {
        return match init.strip_prefix("init") {
            Some("") => Some(Resource::Init(0)),
            Some(n) => {
                let n = u32::try_from(number(n.strip_prefix('.')?)?).ok()?;
                (n > 0).then_some(Resource::Init(n))
            }
            None => None,
        };
    }
    let stem = name.strip_suffix(".m4s")?;
    match stem.split_once('.') {
        None => Some(Resource::Segment(number(stem)?)),
        Some((msn, part)) => Some(Resource::Part(number(msn)?, u32::try_from(number(part)?).ok()?)),
    }
}

fn number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        let ok = [
            ("init.mp4", Resource::Init(0)),
            ("init.1.mp4", Resource::Init(1)),
            ("init.4294967295.mp4", Resource::Init(u32::MAX)),
            ("0.m4s", Resource::Segment(0)),
            ("12.m4s", Resource::Segment(12)),
            ("12.3.m4s", Resource::Part(12, 3)),
            ("0.0.m4s", Resource::Part(0, 0)),
            ("18446744073709551615.m4s", Resource::Segment(u64::MAX)),
            ("18446744073709551615.4294967295.m4s", Resource::Part(u64::MAX, u32::MAX)),
        ];
        for (name, want) in ok {
            assert_eq!(parse_uri(name), Some(want), "{name}");
            assert_eq!(want.to_string(), name);
        }
        let bad = [
            "",
            "init.m4s",
            "init.0.mp4",
            "init.01.mp4",
            "init..mp4",
            "init1.mp4",
            "init.4294967296.mp4",
            "Init.mp4",
            "init.mp4 ",
            ".m4s",
            "..m4s",
            "1..m4s",
            ".1.m4s",
            "1.m4s.m4s",
            "1.2.3.m4s",
            "+1.m4s",
            "-1.m4s",
            "01.m4s",
            "1.01.m4s",
            " 1.m4s",
            "1 .m4s",
            "1.M4S",
            "1.mp4",
            "12",
            "a.m4s",
            "1.a.m4s",
            "18446744073709551616.m4s",
            "1.4294967296.m4s",
            "１.m4s",
            "../1.m4s",
            "s/1.m4s",
            "1.m4s?x=1",
        ];
        for name in bad {
            assert_eq!(parse_uri(name), None, "{name:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(path("ab12", Resource::Init(0)), "ab12/init.mp4");
        assert_eq!(path("ab12", Resource::Init(3)), "ab12/init.3.mp4");
        assert_eq!(path("ab12", Resource::Segment(7)), "ab12/7.m4s");
        assert_eq!(path("ab12", Resource::Part(7, 2)), "ab12/7.2.m4s");
    }
}
