//! Titles as OnAir keeps them, and which one wins against the room's name (pure: times come in
//! as arguments).
//!
//! Every title carries when it was set. The streamer's newest title wins: a title set while the
//! Matrix session is not ready, or while the homeserver is unreachable, is kept (in
//! `<data_dir>/titles.json`, so it survives a restart) and becomes the room name once Matrix is
//! back. A room name changed in another client is adopted only if its `m.room.name` event is
//! newer than OnAir's title. Once a title has become the room name, its time is the name event's
//! (the homeserver's clock), so later names are compared by one clock; only a title still waiting
//! to reach the room is dated by OnAir's clock, which is then assumed to agree with the
//! homeserver's to within seconds, as NTP keeps them.

use std::collections::HashMap;
use std::path::Path;

use onair_matrix::RoomName;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// A stream's title as OnAir keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Title {
    /// Empty: the title was removed (the stream name shows).
    pub title: String,
    /// When it was set, in milliseconds since the Unix epoch: the room name event's
    /// `origin_server_ts` once it is the room name (or was adopted from the room), by OnAir's
    /// clock before; 0 when unknown (a file from before times were kept: any dated room name is
    /// newer).
    #[serde(default)]
    pub set_ms: u64,
}

/// What to do to bring a stream's title and its room name in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    /// They agree (or neither has a title).
    Keep,
    /// The room's name is newer: it becomes OnAir's title.
    Adopt(Title),
    /// OnAir's title is newer (or the room's time is unknown): it becomes the room name.
    Push(String),
}

/// Which of OnAir's title `own` (`None`: never set) and the room's name `room` (`None`: the room
/// never had one) wins: the newer one. A room name without a time loses to any title of OnAir's.
pub fn reconcile(own: Option<&Title>, room: Option<&RoomName>) -> Reconcile {
    let room_title = |r: &RoomName| Title { title: r.name.clone(), set_ms: r.ts_ms.unwrap_or(0) };
    match (own, room) {
        (None, None) => Reconcile::Keep,
        (None, Some(r)) if r.name.is_empty() => Reconcile::Keep,
        (None, Some(r)) => Reconcile::Adopt(room_title(r)),
        (Some(o), None) if o.title.is_empty() => Reconcile::Keep,
        (Some(o), None) => Reconcile::Push(o.title.clone()),
        (Some(o), Some(r)) if o.title == r.name => Reconcile::Keep,
        (Some(o), Some(r)) if r.ts_ms.is_some_and(|ts| ts > o.set_ms) => Reconcile::Adopt(room_title(r)),
        (Some(o), Some(_)) => Reconcile::Push(o.title.clone()),
    }
}

/// The titles kept in `path`; an unreadable file is ignored (with a log line), never fatal.
pub fn load(path: &Path) -> HashMap<String, Title> {
    /// Before titles had times, the file mapped streams to plain strings.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Dated(Title),
        Undated(String),
    }
    let Ok(text) = std::fs::read_to_string(path) else { return HashMap::new() };
    match serde_json::from_str::<HashMap<String, Stored>>(&text) {
        Ok(titles) => titles
            .into_iter()
            .map(|(stream, t)| {
                let t = match t {
                    Stored::Dated(t) => t,
                    Stored::Undated(title) => Title { title, set_ms: 0 },
                };
                (stream, t)
            })
            .collect(),
        Err(e) => {
            // Kept aside, so the next save does not overwrite what a person may still rescue.
            let aside = path.with_extension("json.unreadable");
            let _ = std::fs::rename(path, &aside);
            warn!(path = %path.display(), error = %e, moved_to = %aside.display(), "ignoring unreadable titles file");
            HashMap::new()
        }
    }
}

/// Writes `titles` to `path` (through a temporary file, so a crash never leaves half a file).
pub fn save(path: &Path, titles: &HashMap<String, Title>) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(titles).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        warn!(path = %path.display(), error = %e, "cannot save titles");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(title: &str, set_ms: u64) -> Title {
        Title { title: title.into(), set_ms }
    }

    fn room(name: &str, ts_ms: Option<u64>) -> RoomName {
        RoomName { name: name.into(), ts_ms }
    }

    #[test]
    fn the_newer_title_wins() {
        // OnAir's title set after the room was renamed (say, while the homeserver was down): pushed.
        assert_eq!(reconcile(Some(&own("Mine", 2000)), Some(&room("Old", Some(1000)))), Reconcile::Push("Mine".into()));
        // The room renamed after OnAir's title (in another client while OnAir was stopped): adopted.
        assert_eq!(
            reconcile(Some(&own("Mine", 1000)), Some(&room("Theirs", Some(2000)))),
            Reconcile::Adopt(own("Theirs", 2000))
        );
        // The same time: OnAir's title stays.
        assert_eq!(
            reconcile(Some(&own("Mine", 1000)), Some(&room("Theirs", Some(1000)))),
            Reconcile::Push("Mine".into())
        );
        // Already in step, whatever the times.
        assert_eq!(reconcile(Some(&own("Same", 1)), Some(&room("Same", Some(9)))), Reconcile::Keep);
        assert_eq!(reconcile(Some(&own("Same", 9)), Some(&room("Same", None))), Reconcile::Keep);
    }

    #[test]
    fn a_missing_side_never_wins_over_a_title() {
        assert_eq!(reconcile(None, None), Reconcile::Keep);
        // Never set in OnAir: the room's name (even undated) is the title.
        assert_eq!(reconcile(None, Some(&room("Theirs", None))), Reconcile::Adopt(own("Theirs", 0)));
        assert_eq!(reconcile(None, Some(&room("Theirs", Some(5)))), Reconcile::Adopt(own("Theirs", 5)));
        assert_eq!(reconcile(None, Some(&room("", Some(5)))), Reconcile::Keep);
        // A room without a name gets OnAir's title.
        assert_eq!(reconcile(Some(&own("Mine", 5)), None), Reconcile::Push("Mine".into()));
        assert_eq!(reconcile(Some(&own("", 5)), None), Reconcile::Keep);
        // A room name of unknown time never beats a title of OnAir's.
        assert_eq!(reconcile(Some(&own("Mine", 0)), Some(&room("Theirs", None))), Reconcile::Push("Mine".into()));
        // A title from before times were kept loses to any dated name.
        assert_eq!(
            reconcile(Some(&own("Mine", 0)), Some(&room("Theirs", Some(1)))),
            Reconcile::Adopt(own("Theirs", 1))
        );
    }

    #[test]
    fn removals_are_titles_too() {
        // The streamer removed the title after the room was named: the room name is removed.
        assert_eq!(reconcile(Some(&own("", 2000)), Some(&room("Old", Some(1000)))), Reconcile::Push(String::new()));
        // The name was removed in the room after OnAir's title: the removal is adopted.
        assert_eq!(reconcile(Some(&own("Mine", 1000)), Some(&room("", Some(2000)))), Reconcile::Adopt(own("", 2000)));
    }

    #[test]
    fn titles_survive_a_restart_with_their_times() {
        let dir = std::env::temp_dir().join(format!("onair-titles-{}", std::process::id()));
        let path = dir.join("titles.json");
        let mut t = HashMap::new();
        t.insert("show".to_string(), own("Friday night 🎮", 1_700_000_000_000));
        t.insert("cleared".to_string(), own("", 1_700_000_000_001));
        save(&path, &t);
        assert_eq!(load(&path), t);
        // The file of an older OnAir (titles without times) still loads.
        std::fs::write(&path, r#"{"show": "Friday night 🎮"}"#).unwrap();
        assert_eq!(load(&path), HashMap::from([("show".to_string(), own("Friday night 🎮", 0))]));
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_empty(), "a broken file is ignored, not fatal");
        assert_eq!(std::fs::read_to_string(dir.join("titles.json.unreadable")).unwrap(), "not json", "and kept aside");
        std::fs::remove_dir_all(&dir).ok();
    }
}
