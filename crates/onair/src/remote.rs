//! `onair title|chat|go-live|end|status|restream`: talk to a running `onair serve` (or the tray app) through its
//! loopback control API, found in `<data_dir>/control.json`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use onair_engine::control_api::ControlEndpoint;
use serde_json::{Value, json};

pub struct Remote {
    http: reqwest::Client,
    endpoint: ControlEndpoint,
}

impl Remote {
    /// The engine whose data dir is `data_dir`.
    pub fn find(data_dir: &Path) -> Result<Remote> {
        let endpoint = ControlEndpoint::read(data_dir).with_context(|| {
            format!(
                "no running OnAir found: {} is missing or unreadable (start `onair serve`, or pass the same --data-dir)",
                ControlEndpoint::path(data_dir).display()
            )
        })?;
        Ok(Remote { http: reqwest::Client::new(), endpoint })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<reqwest::Response> {
        let url = format!("{}/api/control{path}", self.endpoint.url);
        let mut req = self.http.request(method, &url).bearer_auth(&self.endpoint.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach OnAir at {} (is `onair serve` still running?)", self.endpoint.url)
        })?;
        if !resp.status().is_success() {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("OnAir answered {code}: {}", text.trim());
        }
        Ok(resp)
    }

    pub async fn set_title(&self, stream: &str, title: &str) -> Result<()> {
        self.call(reqwest::Method::PUT, &format!("/streams/{stream}/title"), Some(json!({ "title": title }))).await?;
        Ok(())
    }

    pub async fn send_chat(&self, stream: &str, text: &str) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("/streams/{stream}/chat"), Some(json!({ "text": text }))).await?;
        Ok(())
    }

    /// A body-less POST (go-live, end).
    pub async fn post(&self, path: &str) -> Result<()> {
        self.call(reqwest::Method::POST, path, None).await?;
        Ok(())
    }

    /// Adds or replaces a restream destination (`body`: url, key, enabled, ome_policy_expires_s).
    pub async fn restream_put(&self, stream: &str, name: &str, body: Value) -> Result<()> {
        self.call(reqwest::Method::PUT, &format!("/streams/{stream}/restream/{name}"), Some(body)).await?;
        Ok(())
    }

    pub async fn restream_remove(&self, stream: &str, name: &str) -> Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/streams/{stream}/restream/{name}"), None).await?;
        Ok(())
    }

    pub async fn restream_list(&self, stream: &str) -> Result<Value> {
        Ok(self.call(reqwest::Method::GET, &format!("/streams/{stream}/restream"), None).await?.json().await?)
    }

    pub async fn status(&self) -> Result<Value> {
        Ok(self.call(reqwest::Method::GET, "/status", None).await?.json().await?)
    }

    /// Prints the stream's chat messages (and title changes) as they arrive, until the engine
    /// stops. With `json`, one engine event JSON per line.
    pub async fn follow_chat(&self, stream: &str, json: bool, out: &mut impl Write) -> Result<()> {
        let mut resp = self.call(reqwest::Method::GET, &format!("/events?stream={stream}"), None).await?;
        let mut sse = SseLines::default();
        while let Some(chunk) = resp.chunk().await.context("the event stream broke")? {
            for data in sse.push(&chunk) {
                let Ok(ev) = serde_json::from_str::<Value>(&data) else { continue };
                let line = if json {
                    Some(data)
                } else {
                    match ev["type"].as_str() {
                        Some("chat") => Some(format!(
                            "[{}] {}: {}",
                            clock(ev["ts_ms"].as_u64().unwrap_or(0)),
                            ev["display_name"].as_str().unwrap_or("?"),
                            ev["body"].as_str().unwrap_or("")
                        )),
                        Some("title") => Some(format!("* title: {}", ev["title"].as_str().unwrap_or(""))),
                        Some("matrix") => Some(format!("* chat {}", ev["state"].as_str().unwrap_or(""))),
                        _ => None,
                    }
                };
                if let Some(line) = line {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// Splits a Server-Sent Events byte stream into the `data` of each event.
#[derive(Default)]
pub struct SseLines {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseLines {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                self.data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            }
        }
        events
    }
}

/// `HH:MM` (UTC) of an epoch-milliseconds time.
fn clock(ts_ms: u64) -> String {
    let mins = ts_ms / 60_000;
    format!("{:02}:{:02}", (mins / 60) % 24, mins % 60)
}

/// Prints `onair status`.
pub fn print_status(status: &Value) {
    print!("{}", status_text(status));
}

/// The text of `onair status`.
fn status_text(status: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let o = &mut out;
    let m = &status["matrix"];
    let chat = match m["state"].as_str() {
        Some("off") => "off (no Matrix homeserver configured)".to_owned(),
        Some(state) => {
            format!("{state} — {} on {}", m["user"].as_str().unwrap_or(""), m["homeserver"].as_str().unwrap_or(""))
        }
        None => "?".into(),
    };
    let _ = writeln!(o, "Chat (Matrix): {chat}");
    if status["require_go_live"] == true {
        let _ = writeln!(o, "Publishes need Go live first.");
    }
    reach_text(o, &status["reach"], &status["https"]);
    let b = &status["budget"];
    match b["upload_mbps"].as_f64() {
        Some(cap) if cap > 0.0 => {
            let used = b["used_mbps"].as_f64().unwrap_or(0.0);
            let _ = write!(o, "Upload budget: {used:.1} of {cap:.1} Mb/s in use");
            match b["refused"].as_u64() {
                Some(n) if n > 0 => {
                    let _ = writeln!(o, "; {n} viewer(s) not admitted directly (sent to the edge or told it is full)");
                }
                _ => o.push('\n'),
            }
        }
        Some(_) => {
            let _ = writeln!(o, "Upload budget: none set (every viewer is admitted; [budget] upload_mbps)");
        }
        None => {}
    }
    for s in status["streams"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        let state = if s["live"] == true {
            "LIVE"
        } else if s["armed"] == true {
            "offline"
        } else {
            "offline (Go live not pressed)"
        };
        let _ = writeln!(o, "{name}: {state} — \"{}\"", s["title"].as_str().unwrap_or(""));
        if s["live"] == true {
            let v = &s["video"];
            let _ = writeln!(
                o,
                "  {}x{} {} fps, {} kb/s, keyframe every {} s, viewers: {} WebRTC + {} HLS{}",
                v["width"],
                v["height"],
                s["fps"],
                s["bitrate_kbps"],
                s["keyframe_interval_s"],
                s["viewers"]["webrtc"],
                s["viewers"]["hls"],
                if s["bframes"] == true { " — B-frames: set Max B-frames to 0 in OBS" } else { "" }
            );
        }
        if let Some(room) = s["chat"]["alias"].as_str() {
            let _ = writeln!(o, "  chat room {room}");
        }
        for d in s["restream"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  restream {}", restream_line(d));
        }
        let _ = writeln!(
            o,
            "  {}{}",
            status["viewer_base"].as_str().unwrap_or(""),
            s["urls"]["viewer"].as_str().unwrap_or("")
        );
    }
    out
}

/// One restream destination in a line: `name → url: state …` (never its key: the API has none).
pub fn restream_line(d: &Value) -> String {
    let state = match d["state"].as_str().unwrap_or("?") {
        _ if d["enabled"] == false => "disabled".to_owned(),
        "live" => format!("live, {} kb/s", d["bitrate_kbps"]),
        "retrying" => format!(
            "retrying in {} s (attempt {}): {}",
            d["next_attempt_s"].as_f64().map_or("?".into(), |s| format!("{s:.0}")),
            d["attempts"],
            d["last_error"].as_str().unwrap_or("?")
        ),
        "refused" => format!("refused: {}", d["last_error"].as_str().unwrap_or("?")),
        "idle" => "idle (starts with the broadcast)".to_owned(),
        other => other.to_owned(),
    };
    let dropped =
        d["dropped_frames"].as_u64().filter(|&n| n > 0).map(|n| format!(", {n} frames dropped (slow destination)"));
    format!(
        "{} → {}{}: {state}{}",
        d["name"].as_str().unwrap_or("?"),
        d["url"].as_str().unwrap_or("?"),
        if d["ome"] == true { " (OME, signed)" } else { "" },
        dropped.unwrap_or_default()
    )
}

/// What `onair serve` prints when reach changes: the reach lines, and the viewer link of
/// `stream` to share when viewers on the internet can open it.
pub fn reach_lines(status: &Value, stream: &str) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    reach_text(&mut o, &status["reach"], &status["https"]);
    if status["reach"]["state"] == "reachable"
        && let Some(base) = status["reach"]["public_base"].as_str()
    {
        let _ = writeln!(o, "  Viewer link for the internet: {}/{stream}", base.trim_end_matches('/'));
    }
    o
}

/// The reach and HTTPS lines of `onair status`: how viewers on the internet get in, and what the
/// streamer must do when OnAir cannot open the way itself.
fn reach_text(o: &mut String, reach: &Value, https: &Value) {
    use std::fmt::Write as _;
    let state = match reach["state"].as_str() {
        Some("reachable") => "reachable from the internet".to_owned(),
        Some("lan_only") => "this network only (LAN)".to_owned(),
        Some("cgnat") => "behind carrier-grade NAT (no port can be opened from here)".to_owned(),
        Some("checking") => "checking…".to_owned(),
        Some(other) => other.to_owned(),
        None => return,
    };
    let _ = writeln!(o, "Reach: {state}");
    if let Some(base) = reach["public_base"].as_str() {
        let _ = writeln!(o, "  public link base: {base}");
    }
    let ip = |k: &str| reach[k].as_str().map(str::to_owned);
    match (ip("public_ip"), ip("router_external_ip")) {
        (Some(p), Some(r)) if p != r => {
            let _ = writeln!(o, "  public address {p} (the router says {r})");
        }
        (Some(p), _) => {
            let _ = writeln!(o, "  public address {p}");
        }
        (None, Some(r)) => {
            let _ = writeln!(o, "  router's external address {r}");
        }
        (None, None) => {}
    }
    let port = |m: &Value| {
        format!(
            "{} {} {} → {}",
            m["purpose"].as_str().unwrap_or("?"),
            m["protocol"].as_str().unwrap_or("?"),
            m["external_port"],
            m["internal"].as_str().unwrap_or("?")
        )
    };
    if let Some(mapping) = reach["mapping"].as_str() {
        let _ = writeln!(o, "  port mapping: {mapping}");
    }
    for m in reach["mappings"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "    mapped {}", port(m));
    }
    let forward: Vec<&Value> = reach["ports_to_forward"].as_array().into_iter().flatten().collect();
    if !forward.is_empty() {
        let _ = writeln!(o, "  forward these ports on your router to this PC:");
        for m in forward {
            let _ = writeln!(o, "    {}", port(m));
        }
    }
    if let Some(advice) = reach["advice"].as_str().filter(|a| !a.is_empty()) {
        let _ = writeln!(o, "  {advice}");
    }
    match https["state"].as_str() {
        None | Some("off") => {}
        Some(state) => {
            let domain = https["domain"].as_str().unwrap_or("");
            let mut line = format!("HTTPS ({}): {state}", https["mode"].as_str().unwrap_or("?"));
            if !domain.is_empty() {
                let _ = write!(line, " for {domain}");
            }
            if let Some(p) = https["https_port"].as_u64() {
                let _ = write!(line, ", port {p}");
            }
            if let Some(p) = https["rtmps_port"].as_u64() {
                let _ = write!(line, ", RTMPS port {p}");
            }
            if let Some(e) = https["expires_unix_s"].as_u64() {
                let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e);
                let _ = write!(line, ", certificate valid until {}", humantime::format_rfc3339_seconds(until));
            }
            let _ = writeln!(o, "{line}");
            if let Some(e) = https["error"].as_str() {
                let _ = writeln!(o, "  {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_across_chunks() {
        let mut s = SseLines::default();
        assert!(s.push(b"data: {\"a\":").is_empty());
        assert_eq!(
            s.push(b"1}\n\n: keep-alive\n\ndata: x\r\ndata: y\n\n"),
            vec!["{\"a\":1}".to_string(), "x\ny".into()]
        );
    }

    #[test]
    fn status_says_how_viewers_get_in_and_what_to_forward() {
        let status = serde_json::json!({
            "matrix": {"state": "off"},
            "require_go_live": false,
            "streams": [],
            "reach": {
                "state": "lan_only", "public_base": null, "public_ip": "11.77.0.1",
                "router_external_ip": "11.77.0.1", "mapping": "refused by the router (UPnP 606)",
                "mappings": [],
                "ports_to_forward": [
                    {"purpose": "HTTP", "protocol": "TCP", "external_port": 8080, "internal": "192.168.1.20:8080", "lease_s": null},
                    {"purpose": "WebRTC", "protocol": "UDP", "external_port": 8189, "internal": "192.168.1.20:8189", "lease_s": null}
                ],
                "advice": "Forward the ports below."
            },
            "https": {"mode": "acme", "state": "error", "domain": "tv.example.org", "expires_unix_s": null,
                      "error": "the CA cannot be reached", "https_port": 8443, "rtmps_port": null}
        });
        let text = status_text(&status);
        assert!(!text.contains("Upload budget"), "{text}");
        let mut budget = status.clone();
        budget["budget"] = serde_json::json!({"upload_mbps": 20.0, "used_mbps": 12.4, "refused": 3});
        let budget_text = status_text(&budget);
        assert!(
            budget_text.contains("Upload budget: 12.4 of 20.0 Mb/s in use; 3 viewer(s) not admitted directly"),
            "{budget_text}"
        );
        budget["budget"] = serde_json::json!({"upload_mbps": 0.0, "used_mbps": 0.0, "refused": 0});
        assert!(status_text(&budget).contains("Upload budget: none set"));
        assert!(text.contains("Reach: this network only (LAN)"), "{text}");
        assert!(text.contains("public address 11.77.0.1\n"), "{text}");
        assert!(text.contains("port mapping: refused by the router (UPnP 606)"), "{text}");
        assert!(text.contains("    HTTP TCP 8080 → 192.168.1.20:8080\n"), "{text}");
        assert!(text.contains("    WebRTC UDP 8189 → 192.168.1.20:8189\n"), "{text}");
        assert!(
            text.contains("HTTPS (acme): error for tv.example.org, port 8443\n  the CA cannot be reached"),
            "{text}"
        );
        let mut reachable = status.clone();
        reachable["reach"] = serde_json::json!({"state": "reachable", "public_base": "http://11.77.0.1:8080",
            "public_ip": "11.77.0.1", "router_external_ip": "11.77.0.1", "mapping": "UPnP",
            "mappings": [{"purpose": "HTTP", "protocol": "TCP", "external_port": 8080, "internal": "192.168.77.10:8080", "lease_s": 3600}],
            "ports_to_forward": [], "advice": ""});
        reachable["https"] = serde_json::json!({"mode": "off", "state": "off"});
        let text = status_text(&reachable);
        assert!(
            text.contains("Reach: reachable from the internet\n  public link base: http://11.77.0.1:8080"),
            "{text}"
        );
        assert!(text.contains("    mapped HTTP TCP 8080 → 192.168.77.10:8080"), "{text}");
        assert!(!text.contains("HTTPS"), "{text}");
    }

    #[test]
    fn restream_lines_say_the_state() {
        let d = serde_json::json!({"name": "twitch", "url": "rtmp://live.twitch.tv/app", "enabled": true, "ome": false,
            "state": "retrying", "bitrate_kbps": 0, "last_error": "connection refused", "next_attempt_s": 3.9,
            "attempts": 2, "dropped_frames": 0, "queued_bytes": 0});
        assert_eq!(
            restream_line(&d),
            "twitch → rtmp://live.twitch.tv/app: retrying in 4 s (attempt 2): connection refused"
        );
        let mut live = d.clone();
        live["state"] = "live".into();
        live["bitrate_kbps"] = 2500.into();
        live["dropped_frames"] = 12.into();
        assert_eq!(
            restream_line(&live),
            "twitch → rtmp://live.twitch.tv/app: live, 2500 kb/s, 12 frames dropped (slow destination)"
        );
        let mut off = d;
        off["enabled"] = false.into();
        assert!(restream_line(&off).ends_with(": disabled"));
    }

    #[test]
    fn clock_is_hh_mm() {
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock((13 * 60 + 7) * 60_000 + 59_999), "13:07");
    }
}
