//! Apply OnAir's settings to a running OBS over obs-websocket v5 (`obws`), then read them back.
//!
//! What the protocol can and cannot do (obs-websocket 5.x):
//! * `SetStreamServiceSettings` sets the custom server and key — refused while OBS streams.
//! * No request sets encoder settings. In **Simple** output mode the encoder is built from profile
//!   parameters at every Start Streaming, so `SetProfileParameter` does it:
//!   `[SimpleOutput] UseAdvanced=true` and `x264Settings=keyint=… bframes=0 scenecut=0` (Simple
//!   mode always streams CBR). In **Advanced** mode the encoder lives in `streamEncoder.json`,
//!   which no request reaches: the user sets it in Settings → Output (the report says what).
//! * The output mode cannot be switched at run time.

use std::fmt;

use obws::client::{ConnectConfig, DangerousConnectConfig, HandshakeError};
use obws::requests::profiles::SetParameter;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::{ObsTarget, redact_key, x264};

/// obs-websocket's default port.
pub const DEFAULT_PORT: u16 = 4455;
/// obs-websocket closes the connection with this code when authentication fails.
const CLOSE_AUTH_FAILED: u16 = 4009;

/// Where obs-websocket listens: `ws://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObsUrl {
    pub host: String,
    pub port: u16,
}

impl ObsUrl {
    /// Parses `ws://HOST[:PORT]` (also a bare `HOST[:PORT]`; IPv6 as `[::1]:4455`).
    pub fn parse(url: &str) -> Result<ObsUrl, ApplyError> {
        let bad = || ApplyError::BadUrl(url.to_owned());
        let rest = match url.split_once("://") {
            Some(("ws", rest)) => rest,
            Some(("wss", _)) => return Err(ApplyError::Tls(url.to_owned())),
            Some(_) => return Err(bad()),
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            None => DEFAULT_PORT,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ObsUrl { host: host.to_owned(), port })
    }
}

impl fmt::Display for ObsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "ws://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "ws://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0:?} is not an obs-websocket address: use ws://HOST:PORT (default ws://127.0.0.1:4455)")]
    BadUrl(String),
    #[error("{0:?}: OnAir talks plain ws:// to OBS (obs-websocket has no TLS); use ws://HOST:PORT")]
    Tls(String),
    #[error(
        "OBS is not reachable at {url} ({reason}). Start OBS and turn on Tools → WebSocket Server Settings → \
         Enable WebSocket server (OBS 28 or newer), and check the port"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "OBS at {url} wants a password: copy it from OBS (Tools → WebSocket Server Settings → Show Connect Info) \
         into the keyring entry obs-websocket-password or the ONAIR_OBS_PASSWORD environment variable"
    )]
    PasswordRequired { url: String },
    #[error("OBS at {url} refused the password: compare it with Tools → WebSocket Server Settings → Show Connect Info")]
    WrongPassword { url: String },
    #[error(
        "{url} did not answer like obs-websocket 5 ({reason}): OnAir needs OBS 28 or newer, where the WebSocket \
         server is built in (the old obs-websocket 4 plugin speaks another protocol)"
    )]
    NotWebsocket5 { url: String, reason: String },
    #[error("OBS {found} is too old: OnAir needs OBS 28 or newer (obs-websocket 5); update OBS")]
    TooOld { found: String },
    #[error("OBS refused {request}: {message}")]
    Refused { request: &'static str, message: String },
    #[error("lost the connection to OBS during {request}: {reason}")]
    Lost { request: &'static str, reason: String },
}

/// OBS' output mode (Settings → Output → Output Mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputMode {
    Simple,
    Advanced,
}

impl OutputMode {
    pub fn from_param(value: Option<&str>) -> OutputMode {
        if value == Some("Advanced") { OutputMode::Advanced } else { OutputMode::Simple }
    }
}

/// One `SetProfileParameter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileParam {
    pub category: &'static str,
    pub name: &'static str,
    pub value: String,
}

/// The Simple-mode profile parameters that make OBS' x264 stream as OnAir needs, given the
/// keyframe interval in frames and the x264 options the profile already has (kept, except ours).
pub fn simple_output_params(target: &ObsTarget, keyint_frames: u32, existing_x264: &str) -> Vec<ProfileParam> {
    let p = |name, value: String| ProfileParam { category: "SimpleOutput", name, value };
    let mut params =
        vec![p("UseAdvanced", "true".into()), p("x264Settings", x264::merge(existing_x264, Some(keyint_frames)))];
    if let Some(b) = target.video_bitrate_kbps {
        params.push(p("VBitrate", b.to_string()));
    }
    if let Some(preset) = &target.preset {
        params.push(p("Preset", preset.clone()));
    }
    params
}

/// What the user must do in Advanced output mode, where no request reaches the encoder.
pub fn advanced_mode_steps(target: &ObsTarget, encoder: Option<&str>) -> String {
    let encoder = encoder.unwrap_or("obs_x264");
    let bframes = if encoder == "obs_x264" {
        "x264 Options: bframes=0 scenecut=0".to_owned()
    } else {
        format!("Max B-frames: 0 (encoder {encoder})")
    };
    format!(
        "OBS is in Advanced output mode, which the WebSocket cannot configure: in Settings → Output → \
         Streaming set Rate Control: CBR, Keyframe Interval: {} s, {bframes} — or set Output Mode to Simple \
         and run this again",
        target.keyint_s
    )
}

/// What was done, what was read back, and what the user must still do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub obs_version: String,
    pub websocket_version: String,
    pub profile: String,
    pub output_mode: Option<OutputMode>,
    /// Frames per second OBS renders (for the keyframe interval in frames).
    pub fps: f64,
    pub keyint_frames: u32,
    /// Whether OBS was streaming when applied.
    pub streaming: bool,
    /// What was set.
    pub done: Vec<String>,
    /// What was read back and matched.
    pub verified: Vec<String>,
    /// What was read back and did not match.
    pub mismatches: Vec<String>,
    /// What the user must still click.
    pub todo: Vec<String>,
}

impl ApplyReport {
    /// Everything set and verified, and nothing left for the user but Start Streaming.
    pub fn complete(&self) -> bool {
        self.mismatches.is_empty() && self.todo.is_empty()
    }
}

/// A connection to obs-websocket.
pub struct ObsClient {
    client: obws::Client,
    url: ObsUrl,
    pub obs_version: String,
    pub websocket_version: String,
}

impl fmt::Debug for ObsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsClient").field("url", &self.url).field("obs_version", &self.obs_version).finish()
    }
}

impl ObsClient {
    /// Connects and authenticates (`password` when OBS asks for one).
    pub async fn connect(url: &ObsUrl, password: Option<&str>) -> Result<ObsClient, ApplyError> {
        // obws checks for the newest OBS it was written against; OnAir only uses requests that
        // obs-websocket 5.0 (OBS 28) has, so an older 5.x is let in after our own check.
        match Self::connect_with(url, password, false).await {
            Err(ObwsConnect::Version(found)) => {
                debug!(%found, "OBS is older than obws expects; checking against OnAir's minimum");
                Self::connect_with(url, password, true).await.map_err(|e| e.into_apply(url, password))
            }
            other => other.map_err(|e| e.into_apply(url, password)),
        }
    }

    async fn connect_with(url: &ObsUrl, password: Option<&str>, lenient: bool) -> Result<ObsClient, ObwsConnect> {
        let config = ConnectConfig {
            host: url.host.as_str(),
            port: url.port,
            password,
            event_subscriptions: None,
            broadcast_capacity: obws::client::DEFAULT_BROADCAST_CAPACITY,
            connect_timeout: std::time::Duration::from_secs(10),
            dangerous: lenient.then_some(DangerousConnectConfig {
                skip_studio_version_check: true,
                skip_websocket_version_check: true,
            }),
        };
        let client = obws::Client::connect_with_config(config).await.map_err(ObwsConnect::from)?;
        let version = client.general().version().await.map_err(ObwsConnect::from)?;
        if version.obs_studio_version.major < 28 || version.obs_web_socket_version.major < 5 {
            return Err(ObwsConnect::Version(version.obs_studio_version.to_string()));
        }
        Ok(ObsClient {
            client,
            url: url.clone(),
            obs_version: version.obs_studio_version.to_string(),
            websocket_version: version.obs_web_socket_version.to_string(),
        })
    }

    /// The obws client, for requests this crate does not wrap.
    pub fn client(&self) -> &obws::Client {
        &self.client
    }

    pub fn url(&self) -> &ObsUrl {
        &self.url
    }

    /// Whether OBS is streaming.
    pub async fn streaming(&self) -> Result<bool, ApplyError> {
        Ok(self.client.streaming().status().await.map_err(req("GetStreamStatus"))?.active)
    }

    /// Starts streaming with the current settings.
    pub async fn start_stream(&self) -> Result<(), ApplyError> {
        self.client.streaming().start().await.map_err(req("StartStream"))
    }

    /// Stops streaming.
    pub async fn stop_stream(&self) -> Result<(), ApplyError> {
        self.client.streaming().stop().await.map_err(req("StopStream"))
    }

    /// A profile parameter of the current profile.
    pub async fn profile_param(&self, category: &str, name: &str) -> Result<Option<String>, ApplyError> {
        Ok(self.client.profiles().parameter(category, name).await.map_err(req("GetProfileParameter"))?.value)
    }

    /// The current stream service: its type and settings.
    pub async fn stream_service(&self) -> Result<(String, serde_json::Value), ApplyError> {
        let s = self
            .client
            .config()
            .stream_service_settings::<serde_json::Value>()
            .await
            .map_err(req("GetStreamServiceSettings"))?;
        Ok((s.r#type, s.settings))
    }

    /// Applies `target` and reads it back. Never starts or stops streaming.
    pub async fn apply(&self, target: &ObsTarget) -> Result<ApplyReport, ApplyError> {
        let mut r = ApplyReport {
            obs_version: self.obs_version.clone(),
            websocket_version: self.websocket_version.clone(),
            ..Default::default()
        };
        r.profile = self.client.profiles().list().await.map_err(req("GetProfileList"))?.current;
        r.streaming = self.streaming().await?;
        let mode = OutputMode::from_param(self.profile_param("Output", "Mode").await?.as_deref());
        r.output_mode = Some(mode);
        let video = self.client.config().video_settings().await.map_err(req("GetVideoSettings"))?;
        r.fps = f64::from(video.fps_numerator) / f64::from(video.fps_denominator.max(1));
        r.keyint_frames = x264::keyint_frames(target.keyint_s, video.fps_numerator, video.fps_denominator);
        info!(profile = %r.profile, ?mode, fps = r.fps, streaming = r.streaming, "applying OnAir's settings to OBS");

        // 1. Server and key.
        if r.streaming {
            r.todo.push(
                "OBS is streaming, and refuses a new server and key meanwhile: Stop Streaming, then run this again"
                    .into(),
            );
        } else {
            let settings = serde_json::json!({ "server": target.server, "key": target.stream_key });
            self.client
                .config()
                .set_stream_service_settings("rtmp_custom", &settings)
                .await
                .map_err(req("SetStreamServiceSettings"))?;
            r.done.push(format!(
                "Stream service: Custom, server {}, key {}",
                target.server,
                redact_key(&target.stream_key)
            ));
        }

        // 2. The encoder, through Simple mode's profile parameters.
        let encoder = self.profile_param("SimpleOutput", "StreamEncoder").await?.unwrap_or_else(|| "x264".into());
        let existing = self.profile_param("SimpleOutput", "x264Settings").await?.unwrap_or_default();
        let params = simple_output_params(target, r.keyint_frames, &existing);
        for p in &params {
            self.client
                .profiles()
                .set_parameter(SetParameter { category: p.category, name: p.name, value: Some(&p.value) })
                .await
                .map_err(req("SetProfileParameter"))?;
            r.done.push(format!("[{}] {}={}", p.category, p.name, p.value));
        }
        match mode {
            OutputMode::Simple if encoder == "x264" => {
                r.verified.push("rate control CBR (Simple output mode always streams CBR)".into());
                if r.streaming {
                    r.todo.push("the encoder settings apply from the next Start Streaming".into());
                }
            }
            OutputMode::Simple => r.todo.push(format!(
                "Simple output mode uses the {encoder} encoder, whose B-frames and keyframes the WebSocket cannot \
                 set: in Settings → Output choose Encoder: Software (x264) and run this again, or switch to \
                 Advanced mode and set Keyframe Interval {} s, Max B-frames 0, Rate Control CBR",
                target.keyint_s
            )),
            OutputMode::Advanced => {
                let adv_encoder = self.profile_param("AdvOut", "Encoder").await?;
                r.todo.push(advanced_mode_steps(target, adv_encoder.as_deref()));
            }
        }

        // 3. Read back.
        if !r.streaming {
            let (ty, settings) = self.stream_service().await?;
            let server = settings["server"].as_str().unwrap_or_default();
            let key = settings["key"].as_str().unwrap_or_default();
            if ty == "rtmp_custom" && server == target.server && key == target.stream_key {
                r.verified.push(format!("stream service rtmp_custom, server {server}, key"));
            } else {
                r.mismatches.push(format!("stream service read back as {ty} {server} (key differs or not set)"));
            }
        }
        for p in &params {
            let back = self.profile_param(p.category, p.name).await?;
            if back.as_deref() == Some(p.value.as_str()) {
                r.verified.push(format!("[{}] {}={}", p.category, p.name, p.value));
            } else {
                r.mismatches.push(format!("[{}] {} read back as {:?}, not {:?}", p.category, p.name, back, p.value));
            }
        }
        let x264_back = self.profile_param("SimpleOutput", "x264Settings").await?.unwrap_or_default();
        r.mismatches.extend(x264::check(&x264_back, Some(r.keyint_frames)));
        Ok(r)
    }
}

/// Connects to `url` and applies `target`.
pub async fn apply(url: &ObsUrl, password: Option<&str>, target: &ObsTarget) -> Result<ApplyReport, ApplyError> {
    let client = ObsClient::connect(url, password).await?;
    client.apply(target).await
}

fn req(request: &'static str) -> impl Fn(obws::error::Error) -> ApplyError {
    move |e| match e {
        obws::error::Error::Api { code, message } => {
            ApplyError::Refused { request, message: message.unwrap_or_else(|| format!("{code:?}")) }
        }
        other => ApplyError::Lost { request, reason: error_chain(&other) },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s += &format!(": {inner}");
        source = inner.source();
    }
    s
}

/// Connect failures, before they are explained.
enum ObwsConnect {
    Version(String),
    Other(obws::error::Error),
}

impl From<obws::error::Error> for ObwsConnect {
    fn from(e: obws::error::Error) -> Self {
        match e {
            obws::error::Error::ObsStudioVersion(v, _) => ObwsConnect::Version(v.to_string()),
            obws::error::Error::ObsWebsocketVersion(v, _) => ObwsConnect::Version(format!("with obs-websocket {v}")),
            other => ObwsConnect::Other(other),
        }
    }
}

impl ObwsConnect {
    fn into_apply(self, url: &ObsUrl, password: Option<&str>) -> ApplyError {
        let url = url.to_string();
        match self {
            ObwsConnect::Version(found) => ApplyError::TooOld { found },
            ObwsConnect::Other(e) => {
                let reason = error_chain(&e);
                match e {
                    obws::error::Error::Handshake(HandshakeError::ConnectionClosed(Some(details)))
                        if u16::from(details.code) == CLOSE_AUTH_FAILED =>
                    {
                        if password.is_some() {
                            ApplyError::WrongPassword { url }
                        } else {
                            ApplyError::PasswordRequired { url }
                        }
                    }
                    obws::error::Error::Handshake(_) | obws::error::Error::RpcVersion { .. } => {
                        ApplyError::NotWebsocket5 { url, reason }
                    }
                    obws::error::Error::Connect(_) | obws::error::Error::Timeout => {
                        ApplyError::Unreachable { url, reason }
                    }
                    _ => ApplyError::Lost { request: "connect", reason },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |s: &str| ObsUrl::parse(s).map(|u| (u.host, u.port));
        assert_eq!(u("ws://127.0.0.1:4455").unwrap(), ("127.0.0.1".into(), 4455));
        assert_eq!(u("ws://obs.local").unwrap(), ("obs.local".into(), 4455));
        assert_eq!(u("192.168.1.9:4460/").unwrap(), ("192.168.1.9".into(), 4460));
        assert_eq!(u("ws://[::1]:4455").unwrap(), ("::1".into(), 4455));
        assert_eq!(u("ws://[fe80::1]").unwrap(), ("fe80::1".into(), 4455));
        assert!(matches!(ObsUrl::parse("wss://h:4455"), Err(ApplyError::Tls(_))));
        for bad in ["http://h:4455", "ws://", "ws://h:0", "ws://h:99999", "ws://h:x", "ws://h/path", "ws://[::1"] {
            assert!(matches!(ObsUrl::parse(bad), Err(ApplyError::BadUrl(_))), "{bad}");
        }
        assert_eq!(ObsUrl::parse("ws://[::1]:1").unwrap().to_string(), "ws://[::1]:1");
        assert_eq!(ObsUrl::parse("h").unwrap().to_string(), "ws://h:4455");
    }

    #[test]
    fn simple_mode_params() {
        let mut t = ObsTarget::new("rtmp://h:1935/live", "s?policy=p&signature=s");
        let p = simple_output_params(&t, 60, "ref=2 bframes=3");
        assert_eq!(
            p,
            vec![
                ProfileParam { category: "SimpleOutput", name: "UseAdvanced", value: "true".into() },
                ProfileParam {
                    category: "SimpleOutput",
                    name: "x264Settings",
                    value: "ref=2 keyint=60 bframes=0 scenecut=0".into()
                },
            ]
        );
        t.video_bitrate_kbps = Some(3000);
        t.preset = Some("veryfast".into());
        let p = simple_output_params(&t, 50, "");
        assert_eq!(p[2], ProfileParam { category: "SimpleOutput", name: "VBitrate", value: "3000".into() });
        assert_eq!(p[3], ProfileParam { category: "SimpleOutput", name: "Preset", value: "veryfast".into() });
    }

    #[test]
    fn advanced_mode_tells_what_to_click() {
        let t = ObsTarget::new("rtmp://h:1935/live", "s");
        let x = advanced_mode_steps(&t, None);
        assert!(x.contains("Keyframe Interval: 2 s") && x.contains("bframes=0 scenecut=0") && x.contains("CBR"), "{x}");
        let n = advanced_mode_steps(&t, Some("jim_nvenc"));
        assert!(n.contains("Max B-frames: 0 (encoder jim_nvenc)"), "{n}");
        assert_eq!(OutputMode::from_param(Some("Advanced")), OutputMode::Advanced);
        assert_eq!(OutputMode::from_param(None), OutputMode::Simple);
    }

    #[test]
    fn errors_read_well() {
        let e = ApplyError::WrongPassword { url: "ws://h:4455".into() };
        assert!(e.to_string().contains("refused the password"));
        let e = ApplyError::TooOld { found: "27.2.4".into() };
        assert!(e.to_string().contains("OBS 28 or newer"));
    }

    #[tokio::test]
    async fn unreachable_and_not_obs() {
        // Nothing listens: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = ObsUrl { host: "127.0.0.1".into(), port };
        let e = ObsClient::connect(&url, None).await.unwrap_err();
        assert!(matches!(e, ApplyError::Unreachable { .. }), "{e}");

        // A WebSocket-less TCP server that closes at once (like a wrong port): not obs-websocket.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let e = ObsClient::connect(&ObsUrl { host: "127.0.0.1".into(), port }, None).await.unwrap_err();
        assert!(matches!(e, ApplyError::Unreachable { .. } | ApplyError::NotWebsocket5 { .. }), "{e}");
    }
}
