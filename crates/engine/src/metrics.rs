//! Prometheus metrics at `GET /metrics` in the text exposition format (version 0.0.4), encoded
//! by `prometheus-client`.
//!
//! Everything is collected when scraped, from where it already lives — no background task and no
//! second copy of a figure: per-stream figures come from [`crate::status::stream_status`] (so
//! they agree with `/api/streams`), refusals from [`Refusals`], WebRTC counters from
//! [`WebrtcServer::stats`], process CPU and memory from `metrics-process` (Linux: `/proc/self`;
//! macOS, Windows and the BSDs: their system calls). What nothing else counts is counted here:
//! the bytes of HLS playlists, init segments, parts and segments answered, per stream
//! ([`Metrics::count_hls`]), and the HLS requests by kind ([`Metrics::count_hls_request`]; with a
//! cache in front, what reaches the origin).
//!
//! `[metrics] enabled = false` answers 404; `loopback_only = true` answers 403 to any client not on
//! this machine. See `docs/metrics.md` for the list of metrics.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use onair_webrtc::WebrtcServer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::config::MetricsSettings;
use crate::error::ApiError;
use crate::hub::Registry;
use crate::limits::Refusals;

/// The `Content-Type` of what [`Metrics::scrape`] returns.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The settings of `/metrics` and the counters only it keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    settings: MetricsSettings,
    hls: Arc<HlsBytes>,
    requests: Arc<HlsRequests>,
}

/// Which HLS resource a request asks for (the `kind` label of `onair_hls_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsRequest {
    /// `llhls.m3u8` without `_HLS_msn`, `playlist.m3u8`.
    Playlist,
    /// `llhls.m3u8?_HLS_msn=…`.
    BlockingPlaylist,
    Init,
    Part,
    Segment,
}

impl HlsRequest {
    const ALL: [HlsRequest; 5] =
        [HlsRequest::Playlist, HlsRequest::BlockingPlaylist, HlsRequest::Init, HlsRequest::Part, HlsRequest::Segment];

    fn label(self) -> &'static str {
        match self {
            HlsRequest::Playlist => "playlist",
            HlsRequest::BlockingPlaylist => "blocking_playlist",
            HlsRequest::Init => "init",
            HlsRequest::Part => "part",
            HlsRequest::Segment => "segment",
        }
    }
}

/// HLS requests received since start, by [`HlsRequest`] kind (all streams, answered or not).
#[derive(Debug, Default)]
struct HlsRequests([AtomicU64; 5]);

/// Bytes of HLS responses: in total, and per stream for the streams the hub has.
#[derive(Debug, Default)]
struct HlsBytes {
    total: AtomicU64,
    /// Only names of streams in the hub get an entry (a request for an unknown stream is answered
    /// 404 before anything is counted), and entries of streams that left the hub are dropped
    /// whenever a name is added: the map is bounded by the streams publishers made.
    by_stream: RwLock<HashMap<String, AtomicU64>>,
}

/// What a scrape reads.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub hub: &'a Arc<Registry>,
    pub webrtc: Option<&'a WebrtcServer>,
    pub refusals: &'a Arc<Refusals>,
}

impl Metrics {
    pub fn new(settings: MetricsSettings) -> Self {
        Metrics { settings, hls: Arc::default(), requests: Arc::default() }
    }

    /// Records an HLS request for a resource of `kind` (counted on arrival, whatever the answer).
    pub fn count_hls_request(&self, kind: HlsRequest) {
        let i = HlsRequest::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.requests.0[i].fetch_add(1, Relaxed);
    }

    /// Bytes of HLS answers sent since the start, all streams.
    pub fn hls_bytes_total(&self) -> u64 {
        self.hls.total.load(Relaxed)
    }

    /// Records `bytes` of an HLS answer (playlist, init, part or segment) of `stream`, a stream
    /// the hub has (the body was just taken from it).
    pub fn count_hls(&self, hub: &Registry, stream: &str, bytes: u64) {
        self.hls.total.fetch_add(bytes, Relaxed);
        let known = {
            let map = self.hls.by_stream.read().unwrap_or_else(|p| p.into_inner());
            map.get(stream).map(|n| n.fetch_add(bytes, Relaxed)).is_some()
        };
        if !known {
            let mut map = self.hls.by_stream.write().unwrap_or_else(|p| p.into_inner());
            map.retain(|name, _| hub.get(name).is_some());
            map.entry(stream.to_owned()).or_default().fetch_add(bytes, Relaxed);
        }
    }

    /// The exposition for a client at `client` (`None`: unknown, treated as remote), or why it is
    /// refused: 404 when disabled, 403 for a remote client under `loopback_only`.
    pub fn scrape(&self, client: Option<IpAddr>, sources: Sources<'_>) -> Result<String, ApiError> {
        if !self.settings.enabled {
            return Err(ApiError::NotFound);
        }
        if self.settings.loopback_only && !client.is_some_and(|ip| ip.to_canonical().is_loopback()) {
            return Err(ApiError::MetricsNotLoopback);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Scrape {
            hub: sources.hub.clone(),
            webrtc: sources.webrtc.cloned(),
            refusals: sources.refusals.clone(),
            hls: self.hls.clone(),
            requests: self.requests.clone(),
        }));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        Ok(out)
    }
}

/// One scrape's view of the engine, encoded by [`Collector::encode`].
struct Scrape {
    hub: Arc<Registry>,
    webrtc: Option<WebrtcServer>,
    refusals: Arc<Refusals>,
    hls: Arc<HlsBytes>,
    requests: Arc<HlsRequests>,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// One metric family: its descriptor, then one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, sample) in samples {
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single<M: EncodeMetric + TypedMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    sample: M,
) -> fmt::Result {
    sample.encode(enc.encode_descriptor(name, help, None, M::TYPE)?)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn count(n: u64) -> ConstCounter<u64> {
    ConstCounter::new(n)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let now = Instant::now();
        let streams: Vec<_> = self
            .hub
            .list()
            .iter()
            .map(|s| {
                let webrtc = self.webrtc.as_ref().map_or(0, |w| w.sessions(s.name()));
                crate::status::stream_status(s.name(), Some(s), webrtc, now)
            })
            .collect();
        let by_name = |f: &dyn Fn(&crate::status::StreamStatus) -> Option<f64>| {
            streams.iter().filter_map(|s| f(s).map(|v| ([("stream", s.name.as_str())], gauge(v)))).collect::<Vec<_>>()
        };
        let e = &mut enc;
        family(e, "onair_stream_live", "1 while the stream is playable (as `live` in /api/streams)", {
            by_name(&|s| Some(if s.live { 1.0 } else { 0.0 }))
        })?;
        family(
            e,
            "onair_stream_ingest_bits_per_second",
            "Bitrate the publisher sends, audio and video, over the last 5 s of stream time",
            by_name(&|s| Some(s.bitrate_kbps as f64 * 1000.0)),
        )?;
        family(e, "onair_stream_fps", "Video frames per second the publisher sends", by_name(&|s| s.fps))?;
        family(
            e,
            "onair_stream_keyframe_interval_seconds",
            "Time between the last two keyframes",
            by_name(&|s| s.keyframe_interval_s),
        )?;
        family(e, "onair_stream_uptime_seconds", "Time since the publish started", by_name(&|s| s.uptime_s))?;
        family(
            e,
            "onair_stream_viewers",
            "Viewers by transport: HLS players that loaded a playlist in the last 10 s (one per address and user agent), WebRTC sessions (connecting or connected)",
            streams.iter().flat_map(|s| {
                [("hls", s.viewers.hls), ("webrtc", s.viewers.webrtc)].map(|(transport, n)| {
                    ([("stream", s.name.as_str()), ("transport", transport)], ConstGauge::new(n as i64))
                })
            }),
        )?;
        let hls = self.hls.by_stream.read().unwrap_or_else(|p| p.into_inner());
        family(
            e,
            "onair_stream_sent_bytes",
            "Bytes of HLS playlists, init segments, parts and segments answered for the stream (may restart from 0 after the stream ended)",
            streams.iter().map(|s| {
                let n = hls.get(&s.name).map_or(0, |n| n.load(Relaxed));
                ([("stream", s.name.as_str()), ("transport", "hls")], count(n))
            }),
        )?;
        drop(hls);
        let stats = self.webrtc.as_ref().map(WebrtcServer::stats).unwrap_or_default();
        family(
            e,
            "onair_sent_bytes",
            "Bytes sent to viewers since start, all streams: HLS response bodies; WebRTC UDP/TCP datagrams (media, RTCP, STUN, DTLS)",
            [
                ([("transport", "hls")], count(self.hls.total.load(Relaxed))),
                ([("transport", "webrtc")], count(stats.shards.iter().map(|s| s.bytes_sent).sum())),
            ],
        )?;
        family(
            e,
            "onair_hls_requests",
            "HLS requests received since start, all streams, by what they ask for (with a cache in front: what reaches the origin)",
            HlsRequest::ALL.iter().zip(&self.requests.0).map(|(k, n)| ([("kind", k.label())], count(n.load(Relaxed)))),
        )?;
        family(
            e,
            "onair_refusals",
            "Clients refused by a limit since start, by reason (named after its [limits] key)",
            self.refusals
                .all()
                .map(|(why, n)| (why.label(), n))
                .chain(stats.refused.iter().copied())
                .map(|(reason, n)| ([("reason", reason)], count(n))),
        )?;
        single(
            e,
            "onair_webrtc_sessions",
            "WebRTC sessions of all streams, connected or connecting",
            ConstGauge::new(self.webrtc.as_ref().map_or(0, |w| w.total_sessions()) as i64),
        )?;
        single(
            e,
            "onair_webrtc_sessions_connecting",
            "WebRTC sessions not connected yet (offer being answered, ICE/DTLS not up)",
            ConstGauge::new(stats.connecting as i64),
        )?;
        single(
            e,
            "onair_webrtc_ice_tcp_connections",
            "ICE-TCP connections open",
            ConstGauge::new(stats.ice_tcp_connections as i64),
        )?;
        single(
            e,
            "onair_webrtc_frames_skipped",
            "Video frames not sent to WebRTC viewers that fell behind (each skips to the next keyframe), all sessions",
            count(stats.frames_skipped),
        )?;
        encode_process(e, &metrics_process::collector::collect())
    }
}

/// The standard process metrics, those the platform gives.
fn encode_process(e: &mut DescriptorEncoder<'_>, p: &metrics_process::collector::Metrics) -> fmt::Result {
    if let Some(s) = p.cpu_seconds_total {
        single(e, "process_cpu_seconds", "Total user and system CPU time spent in seconds", ConstCounter::new(s))?;
    }
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory size in bytes", p.resident_memory_bytes),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_memory_bytes),
        ("process_open_fds", "Number of open file descriptors", p.open_fds),
        ("process_max_fds", "Maximum number of open file descriptors (0: unlimited)", p.max_fds),
        ("process_threads", "Number of OS threads in the process", p.threads),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            single(e, name, help, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `/metrics` through the router (`oneshot`, no sockets), the client address given as the
    //! `ConnectInfo` the server would attach.

    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use onair_hls::HlsConfig;
    use tower::ServiceExt;

    use super::*;
    use crate::http::{AppState, router};
    use crate::limits::Refusal;

    fn app_with(settings: MetricsSettings) -> (axum::Router, Arc<Registry>, Arc<Refusals>) {
        let registry = Registry::new(HlsConfig::default());
        let refusals = Arc::new(Refusals::default());
        let state = AppState {
            registry: registry.clone(),
            webrtc: None,
            ice: Default::default(),
            control: crate::control::tests::control(&registry),
            control_token: "token".into(),
            refusals: refusals.clone(),
            metrics: Arc::new(Metrics::new(settings)),
            reload_waiters: Default::default(),
            hls: Default::default(),
            budget: Default::default(),
        };
        (router(state), registry, refusals)
    }

    /// GET `uri` from `peer` (none: no address known); status, content type and body (lossy
    /// UTF-8: only text is looked into).
    async fn get(app: &axum::Router, uri: &str, peer: Option<&str>) -> (StatusCode, String, String) {
        let mut req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        let res = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let kind = parts.headers.get("content-type").map_or("", |v| v.to_str().unwrap()).to_owned();
        (parts.status, kind, String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned())
    }

    /// The value of the sample line that starts with `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn off_is_404_and_loopback_only_refuses_other_addresses() {
        let (app, ..) = app_with(MetricsSettings { enabled: false, loopback_only: false });
        assert_eq!(get(&app, "/metrics", Some("127.0.0.1:5000")).await.0, StatusCode::NOT_FOUND);

        let (app, ..) = app_with(MetricsSettings { enabled: true, loopback_only: true });
        for local in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert_eq!(get(&app, "/metrics", Some(local)).await.0, StatusCode::OK, "{local}");
        }
        for remote in [Some("192.0.2.7:5000"), Some("[2001:db8::7]:5000"), Some("[::ffff:192.0.2.7]:5000"), None] {
            let (status, _, body) = get(&app, "/metrics", remote).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{remote:?}");
            assert!(body.contains("loopback_only"), "the answer names the setting: {body}");
        }

        let (app, ..) = app_with(MetricsSettings { enabled: true, loopback_only: false });
        assert_eq!(get(&app, "/metrics", Some("192.0.2.7:5000")).await.0, StatusCode::OK);
        assert_eq!(get(&app, "/metrics", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn streams_refusals_hls_bytes_and_the_process() {
        let (app, registry, refusals) = app_with(MetricsSettings::default());
        let (status, kind, text) = get(&app, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
        // Every refusal reason is there from the start, at 0.
        for why in Refusal::ALL {
            assert_eq!(sample(&text, &format!("onair_refusals_total{{reason=\"{}\"}}", why.label())), Some(0.0));
        }
        assert!(!text.contains("stream=\""), "no stream yet:\n{text}");

        let _publisher = crate::http::tests::publish_capture(&registry, "obs", 4);
        refusals.count(Refusal::RtmpPending);
        let (_, _, playlist) = get(&app, "/live/obs/llhls.m3u8", Some("192.0.2.7:5000")).await;
        let map = playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).unwrap().trim_end_matches('"');
        let init = registry.get("obs").unwrap().media(map.split('/').next().unwrap(), onair_hls::Resource::Init(0));
        let init_len: usize = init.unwrap().unwrap().iter().map(|b| b.len()).sum();
        assert_eq!(get(&app, &format!("/live/obs/{map}"), None).await.0, StatusCode::OK);
        // Refused requests count nothing.
        assert_eq!(get(&app, "/live/nope/llhls.m3u8", None).await.0, StatusCode::NOT_FOUND);
        let sent = (playlist.len() + init_len) as f64;

        // Some CPU time to see (the clock ticks in 10 ms steps on Linux).
        let spin = Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let (_, _, text) = get(&app, "/metrics", None).await;
        let status = crate::status::stream_status("obs", registry.get("obs").as_deref(), 0, Instant::now());
        assert_eq!(sample(&text, r#"onair_stream_live{stream="obs"}"#), Some(1.0));
        assert_eq!(
            sample(&text, r#"onair_stream_ingest_bits_per_second{stream="obs"}"#),
            Some(status.bitrate_kbps as f64 * 1000.0)
        );
        assert_eq!(sample(&text, r#"onair_stream_fps{stream="obs"}"#), status.fps);
        assert_eq!(
            sample(&text, r#"onair_stream_keyframe_interval_seconds{stream="obs"}"#),
            status.keyframe_interval_s
        );
        assert_eq!(sample(&text, r#"onair_stream_viewers{stream="obs",transport="hls"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"onair_stream_viewers{stream="obs",transport="webrtc"}"#), Some(0.0));
        assert_eq!(sample(&text, r#"onair_stream_sent_bytes_total{stream="obs",transport="hls"}"#), Some(sent));
        assert_eq!(sample(&text, r#"onair_sent_bytes_total{transport="hls"}"#), Some(sent));
        assert_eq!(sample(&text, r#"onair_sent_bytes_total{transport="webrtc"}"#), Some(0.0));
        assert_eq!(sample(&text, r#"onair_refusals_total{reason="rtmp_pending"}"#), Some(1.0));
        // Requests by kind, answered or not (the refused one for "nope" too).
        assert_eq!(sample(&text, r#"onair_hls_requests_total{kind="playlist"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"onair_hls_requests_total{kind="init"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"onair_hls_requests_total{kind="blocking_playlist"}"#), Some(0.0));
        assert_eq!(sample(&text, "onair_webrtc_sessions"), Some(0.0));
        assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|s| s > 0.0), "{text}");
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6), "{text}");
        // Every sample belongs to a family declared just before it.
        let mut declared = None;
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                declared = t.split(' ').next();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name), declared, "{line}");
            }
        }
    }

    #[test]
    fn hls_bytes_are_kept_for_streams_the_hub_has() {
        let hub = Registry::new(HlsConfig::default());
        let metrics = Metrics::default();
        let a = crate::http::tests::publish_capture(&hub, "a", 1);
        metrics.count_hls(&hub, "a", 10);
        metrics.count_hls(&hub, "a", 5);
        drop(a);
        let _b = crate::http::tests::publish_capture(&hub, "b", 1);
        // Adding "b" drops "a", which left the hub; the total keeps everything.
        metrics.count_hls(&hub, "b", 7);
        let map = metrics.hls.by_stream.read().unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(map["b"].load(Relaxed), 7);
        assert_eq!(metrics.hls.total.load(Relaxed), 22);
    }
}
