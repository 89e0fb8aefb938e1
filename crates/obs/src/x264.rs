//! x264 option strings as OBS takes them (`x264Settings` in Simple output mode, `x264opts` in
//! Advanced mode): `name=value` pairs separated by spaces, handed to `x264_param_parse` one by one.

/// The options OnAir needs for WebRTC playback: a fixed keyframe interval (in frames), no
/// B-frames, and no extra keyframes at scene cuts (a keyframe interval alone is only a maximum).
pub fn options(keyint_frames: Option<u32>) -> String {
    match keyint_frames {
        Some(k) => format!("keyint={k} bframes=0 scenecut=0"),
        None => "bframes=0 scenecut=0".to_owned(),
    }
}

/// The keyframe interval in frames for `keyint_s` seconds at `fps_num/fps_den` frames per second.
pub fn keyint_frames(keyint_s: u32, fps_num: u32, fps_den: u32) -> u32 {
    let fps = f64::from(fps_num) / f64::from(fps_den.max(1));
    ((f64::from(keyint_s) * fps).round() as u32).max(1)
}

/// Splits an option string into `(name, value)` pairs (names without a leading `--`).
pub fn parse(opts: &str) -> Vec<(String, String)> {
    opts.split_whitespace()
        .map(|o| {
            let o = o.trim_start_matches("--");
            match o.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (o.to_owned(), String::new()),
            }
        })
        .collect()
}

/// The value of option `name` (the last one wins, as in x264).
pub fn get(opts: &str, name: &str) -> Option<String> {
    parse(opts).into_iter().rev().find(|(k, _)| norm(k) == norm(name)).map(|(_, v)| v)
}

/// `existing` with OnAir's options set (replacing any earlier value of them) and the user's other
/// options kept in order.
pub fn merge(existing: &str, keyint_frames: Option<u32>) -> String {
    let ours = parse(&options(keyint_frames));
    let mut out: Vec<String> = existing
        .split_whitespace()
        .filter(|o| {
            let name = o.trim_start_matches("--").split('=').next().unwrap_or_default();
            !ours.iter().any(|(k, _)| norm(k) == norm(name)) && !is_keyint_alias(name)
        })
        .map(str::to_owned)
        .collect();
    out.extend(ours.into_iter().map(|(k, v)| format!("{k}={v}")));
    out.join(" ")
}

/// What is wrong with `opts` for OnAir (empty when it asks for exactly what OnAir needs).
pub fn check(opts: &str, keyint_frames: Option<u32>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(k) = keyint_frames {
        match get(opts, "keyint") {
            Some(v) if v == k.to_string() => {}
            Some(v) => problems.push(format!("x264 keyint is {v}, not {k}")),
            None => problems.push(format!("x264 keyint={k} is missing")),
        }
    }
    match get(opts, "bframes").as_deref() {
        Some("0") => {}
        Some(v) => problems.push(format!("x264 bframes is {v}, not 0")),
        None => problems.push("x264 bframes=0 is missing".to_owned()),
    }
    match get(opts, "scenecut").as_deref() {
        Some("0") => {}
        Some(v) => problems.push(format!("x264 scenecut is {v}, not 0")),
        None => problems.push("x264 scenecut=0 is missing".to_owned()),
    }
    problems
}

fn norm(name: &str) -> String {
    name.replace('_', "-").to_ascii_lowercase()
}

/// x264 also takes `keyint-max`/`keyint_max` for the keyframe interval.
fn is_keyint_alias(name: &str) -> bool {
    norm(name) == "keyint-max"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_frames() {
        assert_eq!(options(Some(60)), "keyint=60 bframes=0 scenecut=0");
        assert_eq!(options(None), "bframes=0 scenecut=0");
        assert_eq!(keyint_frames(2, 30, 1), 60);
        assert_eq!(keyint_frames(2, 30000, 1001), 60);
        assert_eq!(keyint_frames(1, 60000, 1001), 60);
        assert_eq!(keyint_frames(2, 25, 1), 50);
        assert_eq!(keyint_frames(0, 30, 1), 1);
        assert_eq!(keyint_frames(2, 30, 0), 60);
    }

    #[test]
    fn merge_keeps_the_users_other_options() {
        assert_eq!(merge("", Some(60)), "keyint=60 bframes=0 scenecut=0");
        assert_eq!(
            merge("rc-lookahead=10 bframes=3 --keyint=250 keyint_max=300 aq-mode=2", Some(60)),
            "rc-lookahead=10 aq-mode=2 keyint=60 bframes=0 scenecut=0"
        );
        // Applying twice changes nothing.
        let once = merge("ref=2", Some(48));
        assert_eq!(merge(&once, Some(48)), once);
    }

    #[test]
    fn check_names_each_problem() {
        assert!(check("keyint=60 bframes=0 scenecut=0", Some(60)).is_empty());
        assert!(check("--bframes=0 scenecut=0 keyint=60", Some(60)).is_empty());
        assert_eq!(
            check("keyint=250 bframes=2", Some(60)),
            vec!["x264 keyint is 250, not 60", "x264 bframes is 2, not 0", "x264 scenecut=0 is missing"]
        );
        assert!(check("bframes=0 scenecut=0", None).is_empty());
        // The last value wins, as in x264.
        assert_eq!(get("bframes=3 bframes=0", "bframes").as_deref(), Some("0"));
    }
}
