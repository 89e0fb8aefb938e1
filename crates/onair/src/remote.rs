//! `onair title|chat|go-live|end|status`: talk to a running `onair serve` (or the tray app) through its
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
    let m = &status["matrix"];
    let chat = match m["state"].as_str() {
        Some("off") => "off (no Matrix homeserver configured)".to_owned(),
        Some(state) => {
            format!("{state} — {} on {}", m["user"].as_str().unwrap_or(""), m["homeserver"].as_str().unwrap_or(""))
        }
        None => "?".into(),
    };
    println!("Chat (Matrix): {chat}");
    if status["require_go_live"] == true {
        println!("Publishes need Go live first.");
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
        println!("{name}: {state} — \"{}\"", s["title"].as_str().unwrap_or(""));
        if s["live"] == true {
            let v = &s["video"];
            println!(
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
            println!("  chat room {room}");
        }
        println!("  {}{}", status["viewer_base"].as_str().unwrap_or(""), s["urls"]["viewer"].as_str().unwrap_or(""));
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
    fn clock_is_hh_mm() {
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock((13 * 60 + 7) * 60_000 + 59_999), "13:07");
    }
}
