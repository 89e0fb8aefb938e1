//! The HTTP face of the engine: maps requests to hub operations (LL-HLS/HLS from memory), the
//! status API, WHEP, the viewer and embed pages, and mounts the loopback control API
//! ([`crate::control_api`]). Errors are [`ApiError`]s.
//!
//! HLS answers carry what an HTTP cache in front needs ([`onair_hls::cache`]): `Cache-Control`
//! per kind of answer, an `ETag` on playlists (`If-None-Match` → `304`), and the preload-hinted
//! part (or the segment in progress) is answered `200` at once, its body following when it is
//! complete, so a cache passes it on without waiting for the whole answer ([`media`]). With
//! `hls.public_base_url` the pages load HLS from that base ([`HlsHttp`]). See `docs/edge.md`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests drive it without sockets.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, http::HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt as _;
use onair_hls::Resource;
use onair_hls::cache::{self, Answer};
use onair_webrtc::{IceServer, WebrtcServer};

use crate::budget::{Admission, BudgetGate};
use crate::config::{HlsSettings, LimitsSettings};
use crate::control::Control;
use crate::control_api::ControlApiState;
use crate::error::ApiError;
use crate::hub::{PlaylistKind, PlaylistRequest, Registry};
use crate::limits::{Refusal, Refusals, Slot, Slots};
use crate::metrics::{HlsRequest, Metrics};
use crate::status::StreamStatus;
use crate::ui;

/// How long a blocking playlist reload or a preload-hinted part is held before 503.
pub const HOLD: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// WebRTC playback; `None` when disabled.
    pub webrtc: Option<WebrtcServer>,
    /// STUN/TURN servers handed to WebRTC players.
    pub ice: Arc<IceSettings>,
    /// Titles, chat, Go live.
    pub control: Arc<Control>,
    /// The bearer token of the control API.
    pub control_token: Arc<str>,
    /// Clients refused by a limit, by reason.
    pub refusals: Arc<Refusals>,
    /// `/metrics` settings and the HLS bytes counted for it.
    pub metrics: Arc<Metrics>,
    /// Playlist and media requests each client may have held at once.
    pub reload_waiters: Arc<ReloadWaiters>,
    /// Cache headers of HLS answers and where the pages load HLS from (`[hls]`).
    pub hls: Arc<HlsHttp>,
    /// The upload budget new direct viewers are admitted against (`[budget]`).
    pub budget: Arc<BudgetGate>,
}

/// What `[hls]` changes in HTTP answers: the lifetime of blocking playlist reload answers (from
/// the part target, [`cache::blocking_max_age_s`]) and, with `hls.public_base_url`, the base the
/// pages load HLS from (the pages are made once, with that base in them).
#[derive(Debug)]
pub struct HlsHttp {
    part_target_ms: u32,
    /// `hls.public_base_url` without its trailing `/`.
    public_base: Option<String>,
    /// The viewer and embed pages naming the base; None: the built pages as they are.
    pages: Option<(Bytes, Bytes)>,
}

impl HlsHttp {
    pub fn new(settings: &HlsSettings) -> Self {
        let public_base = settings.public_base().map(str::to_owned);
        let pages = public_base.as_deref().and_then(|base| {
            let page = |file| ui::get(file).map(|html| with_hls_base(html, base));
            Some((page("index.html")?, page("embed.html")?))
        });
        HlsHttp { part_target_ms: settings.part_target_ms, public_base, pages }
    }

    fn cache_control(&self, answer: Answer) -> HeaderValue {
        HeaderValue::from_str(&cache::cache_control(answer, self.part_target_ms)).expect("an ASCII header value")
    }

    /// The status API's HLS links point at the base when there is one.
    fn rebase(&self, mut status: StreamStatus) -> StreamStatus {
        if let Some(base) = &self.public_base {
            status.urls.llhls = format!("{base}{}", status.urls.llhls);
            status.urls.hls = format!("{base}{}", status.urls.hls);
        }
        status
    }
}

impl Default for HlsHttp {
    fn default() -> Self {
        HlsHttp::new(&HlsSettings::default())
    }
}

/// `html` with `<meta name="onair-hls-base" content="<base>">` at the start of its `<head>`: the
/// pages' player loads playlists from that base (`hlsBaseFromPage` in `ui/src/player.ts`).
fn with_hls_base(html: &[u8], base: &str) -> Bytes {
    let escaped = base.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    let meta = format!("<meta name=\"onair-hls-base\" content=\"{escaped}\" />");
    let at = html.windows(6).position(|w| w == b"<head>").map_or(0, |i| i + 6);
    let mut out = Vec::with_capacity(html.len() + meta.len());
    out.extend_from_slice(&html[..at]);
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(&html[at..]);
    Bytes::from(out)
}

/// Playlist and media requests (which may be held: blocking reloads, the preload-hinted part)
/// one client network may have open at once (`limits.reload_waiters_per_ip`); over it, `503` with
/// `Retry-After` — a status players retry (hls.js gives up on a 4xx such as 429). In total they are
/// bounded by the connections (`limits.http_connections`: a held request, or a held body of a
/// pending part, occupies its connection), so the per-client map is too. A cache in front of
/// the server is one client: it holds one request per URL it is filling (a handful at the live
/// edge), see `docs/edge.md`.
#[derive(Debug)]
pub struct ReloadWaiters {
    slots: Arc<Slots>,
    retry_after_s: u64,
}

impl ReloadWaiters {
    pub fn new(limits: &LimitsSettings) -> Self {
        ReloadWaiters {
            slots: Slots::new(usize::MAX, limits.reload_waiters_per_ip),
            retry_after_s: limits.retry_after_s,
        }
    }

    /// A place for a request from `peer` (the unspecified address when the connection's is not
    /// known, as in tests without sockets); None when its client has no place left (counted and
    /// logged; answer it [`ReloadWaiters::refused`]).
    fn take(&self, peer: Option<Extension<ConnectInfo<SocketAddr>>>, refusals: &Refusals) -> Option<Slot> {
        let addr = peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |Extension(ConnectInfo(a))| a);
        let slot = self.slots.try_take(addr.ip()).ok();
        if slot.is_none() {
            let why = Refusal::ReloadWaiters;
            match refusals.refuse(why, std::time::Instant::now()) {
                Some(n) => tracing::info!(remote = %addr, refused = n, "HTTP request refused: {}", why.reason()),
                None => tracing::debug!(remote = %addr, "HTTP request refused: {}", why.reason()),
            }
        }
        slot
    }

    /// The answer to a request [`ReloadWaiters::take`] found no place for.
    fn refused(&self) -> Response {
        crate::serve::busy(self.retry_after_s, Refusal::ReloadWaiters.reason())
    }

    /// Requests holding a place now.
    pub fn in_use(&self) -> usize {
        self.slots.in_use()
    }
}

impl Default for ReloadWaiters {
    fn default() -> Self {
        ReloadWaiters::new(&LimitsSettings::default())
    }
}

/// The ICE servers players get in WHEP `Link` headers.
#[derive(Debug, Clone, Default)]
pub struct IceSettings {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    /// The coturn `use-auth-secret` shared secret; TURN URLs are only handed out with it.
    pub turn_secret: Option<String>,
    pub turn_ttl: Duration,
}

impl IceSettings {
    /// The servers to hand out now (TURN credentials freshly computed).
    pub fn servers(&self, now: std::time::SystemTime) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer { urls: self.stun_urls.clone(), ..Default::default() });
        }
        if let Some(secret) = self.turn_secret.as_ref().filter(|_| !self.turn_urls.is_empty()) {
            let (user, credential) = onair_webrtc::turn_rest_credentials(secret, "onair", self.turn_ttl, now);
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(user),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// The largest SDP offer accepted (real offers are a few kB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let control = ControlApiState { control: state.control.clone(), token: state.control_token.clone() };
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/streams", get(api_streams))
        .route("/api/streams/{stream}", get(api_stream))
        .route("/metrics", get(metrics))
        .route(
            "/live/{stream}/whep",
            post(whep_offer).patch(whep_patch).options(whep_options).layer(DefaultBodyLimit::max(MAX_OFFER_BYTES)),
        )
        .route("/live/{stream}/whep/{session}", delete(whep_delete).patch(whep_patch))
        .route("/live/{stream}/{file}", get(playlist))
        .route("/live/{stream}/{session}/{file}", get(media))
        .route("/assets/{*path}", get(asset))
        .route("/embed/{stream}", get(embed_page))
        .route("/{stream}", get(viewer_page))
        .nest("/api/control", crate::control_api::router(control))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// `Access-Control-Allow-Origin: *` on everything, and preflight answers (a WHEP endpoint's
/// `OPTIONS` also hands out the ICE servers: [`whep_options`]).
async fn cors(req: Request, next: Next) -> Response {
    let whep = req.uri().path().ends_with("/whep");
    let mut res = if req.method() == Method::OPTIONS && !whep {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS, POST, DELETE, PATCH"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, Content-Type, ETag"));
    res
}

async fn root(State(st): State<AppState>) -> Redirect {
    Redirect::temporary(&format!("/{}", st.control.default_stream()))
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const NO_CACHE: &str = "no-cache, no-store";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// An optional numeric query parameter; the error names the bad value.
fn parse_u<T: std::str::FromStr>(q: &HashMap<String, String>, key: &str) -> Result<Option<T>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("{key}={v:?} is not a valid number"))),
    }
}

/// Identifies an HLS player for the viewer count: its address and user agent.
fn client_key(peer: Option<Extension<ConnectInfo<SocketAddr>>>, headers: &HeaderMap) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.map(|Extension(ConnectInfo(addr))| addr.ip()).hash(&mut h);
    headers.get(header::USER_AGENT).map(HeaderValue::as_bytes).hash(&mut h);
    h.finish()
}

/// `llhls.m3u8` (with blocking reload) and `playlist.m3u8`, with their `Cache-Control`
/// ([`Answer::BlockingPlaylist`], [`Answer::Playlist`]; a 404 is [`Answer::PlaylistNotFound`]),
/// an `ETag`, and `304` for a matching `If-None-Match`.
async fn playlist(
    State(st): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let kind = match file.as_str() {
        "llhls.m3u8" => PlaylistKind::LowLatency,
        "playlist.m3u8" => PlaylistKind::Plain,
        _ => return Err(ApiError::NotFound),
    };
    if let Some(over) = hls_admission(&st, &name, &file, &uri, peer, &headers) {
        return over;
    }
    let blocking = kind == PlaylistKind::LowLatency && q.contains_key("_HLS_msn");
    st.metrics.count_hls_request(if blocking { HlsRequest::BlockingPlaylist } else { HlsRequest::Playlist });
    let answer = if blocking { Answer::BlockingPlaylist } else { Answer::Playlist };
    let served = async {
        let msn = parse_u(&q, "_HLS_msn")?;
        let part = parse_u(&q, "_HLS_part")?;
        let Some(_slot) = st.reload_waiters.take(peer, &st.refusals) else { return Ok(None) };
        let req = PlaylistRequest { kind, msn, part, viewer: client_key(peer, &headers) };
        Ok::<_, ApiError>(Some(st.registry.serve_playlist(&name, req, tokio::time::Instant::now() + HOLD).await?))
    };
    let body = match served.await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(st.reload_waiters.refused()),
        Err(e) => {
            let answer = if e.status() == StatusCode::NOT_FOUND { Answer::PlaylistNotFound } else { Answer::Error };
            let mut res = e.into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, st.hls.cache_control(answer));
            return Ok(res);
        }
    };
    let etag = cache::etag(&body);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| cache::if_none_match(v, &etag));
    let etag = HeaderValue::from_str(&etag).expect("an ASCII tag");
    let cache_control = st.hls.cache_control(answer);
    if unchanged {
        return Ok(
            (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, cache_control), (header::ETAG, etag)]).into_response()
        );
    }
    st.metrics.count_hls(&st.registry, &name, body.len() as u64);
    let content_type = HeaderValue::from_static(PLAYLIST_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache_control), (header::ETAG, etag)], body)
        .into_response())
}

/// `init.mp4`, segments and parts of one publish session: immutable ([`Answer::Media`]). A
/// pending one (the preload-hinted part, the segment in progress) is answered `200` with its
/// headers at once and its body (chunked) when it is complete, so that a cache in front can
/// pass the answer on — and coalesce the players asking for it — before it is complete. The
/// bytes cannot come earlier without changing the fMP4 contract: a part is one `moof` + `mdat`,
/// and the `moof` lists every sample's size and duration, known only when the part closes. If
/// it never completes (the stream ended without it, 10 s passed) the body is cut off (no last
/// chunk), which caches do not store and players retry.
async fn media(
    State(st): State<AppState>,
    Path((name, session, file)): Path<(String, String, String)>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let resource = onair_hls::parse_uri(&file).ok_or(ApiError::NotFound)?;
    st.metrics.count_hls_request(match resource {
        Resource::Init(_) => HlsRequest::Init,
        Resource::Part(..) => HlsRequest::Part,
        Resource::Segment(_) => HlsRequest::Segment,
    });
    let Some(slot) = st.reload_waiters.take(peer, &st.refusals) else { return Ok(st.reload_waiters.refused()) };
    let stream = st.registry.get(&name).ok_or_else(|| crate::hub::ServeError::Offline(name.clone()))?;
    let kind = if matches!(resource, Resource::Init(_)) { "video/mp4" } else { "video/iso.segment" };
    let head = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CACHE_CONTROL, st.hls.cache_control(Answer::Media)),
    ];
    if let Some(body) = stream.media(&session, resource)? {
        st.metrics.count_hls(&st.registry, &name, body.iter().map(|b| b.len() as u64).sum());
        return Ok((head, axum::body::Body::new(Chunks::new(body))).into_response());
    }
    drop(stream);
    let body = futures_util::stream::once(async move {
        let _slot = slot;
        let deadline = tokio::time::Instant::now() + HOLD;
        match st.registry.serve_media(&name, &session, resource, deadline).await {
            Ok(chunks) => {
                st.metrics.count_hls(&st.registry, &name, chunks.iter().map(|b| b.len() as u64).sum());
                chunks.into_iter().map(Ok).collect()
            }
            Err(e) => {
                tracing::debug!(stream = %name, %session, %resource, reason = %e, "pending HLS answer cut off");
                vec![Err(e)]
            }
        }
    })
    .flat_map(futures_util::stream::iter);
    Ok((head, axum::body::Body::from_stream(body)).into_response())
}

/// A body sent as the buffers it is made of (a segment is its parts): no copy, exact length.
struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks: chunks.into(), remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn bytes_response(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], body).into_response()
}

async fn api_streams(State(st): State<AppState>) -> Response {
    let list: Vec<StreamStatus> =
        st.registry.list().iter().map(|s| st.hls.rebase(st.control.status(s.name()))).collect();
    ([(header::CACHE_CONTROL, NO_CACHE)], Json(list)).into_response()
}

async fn api_stream(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if !crate::is_valid_stream_name(&name) {
        return Err(ApiError::BadRequest("invalid stream name".into()));
    }
    let status = st.hls.rebase(st.control.stream_status(&name).await);
    Ok(([(header::CACHE_CONTROL, NO_CACHE)], Json(status)).into_response())
}

/// Prometheus metrics ([`crate::metrics`]).
async fn metrics(
    State(st): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let client = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let sources = crate::metrics::Sources { hub: &st.registry, webrtc: st.webrtc.as_ref(), refusals: &st.refusals };
    let body = st.metrics.scrape(client, sources)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE), (header::CACHE_CONTROL, NO_CACHE)], body)
        .into_response())
}

/// WHEP (RFC 9725): an SDP offer in, `201 Created` with the answer and the session's `Location`.
async fn whep_offer(
    State(st): State<AppState>,
    Path(name): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let server = st.webrtc.as_ref().ok_or(ApiError::WebrtcDisabled)?;
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !sdp_type {
        return Err(ApiError::UnsupportedMediaType("a WHEP offer is Content-Type: application/sdp"));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the offer is not UTF-8".into()))?;
    let offline = || ApiError::Serve(crate::hub::ServeError::Offline(name.clone()));
    let stream = st.registry.get(&name).ok_or_else(offline)?;
    // The WebRTC limits first, before the stream's broadcast receiver exists.
    let client = peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |Extension(ConnectInfo(a))| a.ip());
    // One viewer, one place in the budget: the page's player that probed the playlist (an HLS
    // viewer now, admitted then) switches to WebRTC without being counted twice.
    let now = Instant::now();
    if st.budget.is_on()
        && !stream.is_hls_viewer(client_key(peer, &headers), now)
        && st.budget.admit(now, stream_kbps(&stream)) == Admission::Full
    {
        refuse_over_budget(&st, &name, client);
        return Err(ApiError::Full { retry_after_s: FULL_RETRY_AFTER_S });
    }
    let reservation = server.reserve(&name, client)?;
    let (tracks, media) = stream.webrtc_feed().ok_or_else(offline)?;
    let answer = server.answer(reservation, offer, &tracks, media).await?;
    let mut res = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/live/{name}/whep/{}", answer.session_id)),
            (header::CACHE_CONTROL, NO_CACHE.to_string()),
        ],
        answer.sdp,
    )
        .into_response();
    append_ice_links(&mut res, &st.ice);
    Ok(res)
}

/// `OPTIONS` of a WHEP endpoint: `204` with the ICE servers (STUN, TURN with fresh credentials) in
/// `Link` headers, as the `201` has them — so a player can give its first peer connection the
/// TURN server (a viewer on a network that lets only TURN through connects at the first try).
/// It answers CORS preflights too.
async fn whep_options(State(st): State<AppState>) -> Response {
    let mut res = (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, NO_CACHE)]).into_response();
    append_ice_links(&mut res, &st.ice);
    res
}

fn append_ice_links(res: &mut Response, ice: &IceSettings) {
    for link in ice.servers(std::time::SystemTime::now()).iter().flat_map(IceServer::link_headers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.headers_mut().append(header::LINK, v);
        }
    }
}

/// WHEP `DELETE` of a session resource.
async fn whep_delete(
    State(st): State<AppState>,
    Path((_, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    match &st.webrtc {
        Some(server) if server.close(&session).await => Ok(StatusCode::OK),
        _ => Err(ApiError::NoWhepSession),
    }
}

/// Trickle ICE and ICE restarts are not offered: the answer carries every candidate.
async fn whep_patch() -> ApiError {
    ApiError::MethodNotAllowed("trickle ICE is not supported: the answer carries all candidates")
}

/// What a client over the upload budget is asked to wait before trying again.
const FULL_RETRY_AFTER_S: u64 = 30;

/// The bit rate a viewer of `stream` takes (0: not known yet).
fn stream_kbps(stream: &crate::hub::Stream) -> u64 {
    stream.figures(Instant::now()).map_or(0, |f| f.stats.bitrate_kbps)
}

/// The one log line of a viewer refused by the upload budget (at `info` once per period).
fn refuse_over_budget(st: &AppState, stream: &str, client: IpAddr) {
    let why = Refusal::UploadBudget;
    match st.refusals.refuse(why, Instant::now()) {
        Some(n) => tracing::info!(%stream, %client, refused = n, "viewer not admitted: {}", why.reason()),
        None => tracing::debug!(%stream, %client, "viewer not admitted: {}", why.reason()),
    }
}

/// The upload budget for a playlist request: a player already watching, or one that fits, goes
/// on (None); a new one over the budget is redirected (`307`) to the same playlist at
/// `hls.public_base_url` when that is set (a cache or CDN in front), else told that the stream
/// is full (`503`).
fn hls_admission(
    st: &AppState,
    name: &str,
    file: &str,
    uri: &Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Option<Result<Response, ApiError>> {
    if !st.budget.is_on() {
        return None;
    }
    let stream = st.registry.get(name)?;
    let now = Instant::now();
    if stream.is_hls_viewer(client_key(peer, headers), now)
        || st.budget.admit(now, stream_kbps(&stream)) == Admission::Admit
    {
        return None;
    }
    let client = peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |Extension(ConnectInfo(a))| a.ip());
    refuse_over_budget(st, name, client);
    let Some(base) = st.hls.public_base.as_deref() else {
        return Some(Err(ApiError::Full { retry_after_s: FULL_RETRY_AFTER_S }));
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("{base}/live/{name}/{file}{query}");
    Some(Ok(redirect(&location)))
}

/// A viewer or embed page of a stream whose new viewers are over the upload budget, with a
/// `budget.edge_url` set: a redirect (`307`) to that page (None: serve ours).
fn page_to_edge(st: &AppState, name: &str) -> Option<Response> {
    if !st.budget.is_on() {
        return None;
    }
    let edge = st.budget.edge_page(name)?;
    let stream = st.registry.get(name)?;
    if st.budget.fits(Instant::now(), stream_kbps(&stream)) {
        return None;
    }
    Some(redirect(&edge))
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, v), (header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE))],
        )
            .into_response(),
        Err(_) => ApiError::Full { retry_after_s: FULL_RETRY_AFTER_S }.into_response(),
    }
}

/// A page: `made` (the built page with the HLS base in it), else the built `file` as it is.
fn page(file: &str, made: Option<&Bytes>, extra: &[(header::HeaderName, &'static str)]) -> Result<Response, ApiError> {
    let body = match made {
        Some(b) => b.clone(),
        None => Bytes::from_static(ui::get(file).ok_or(ApiError::PageMissing)?),
    };
    let mut res = bytes_response(body, "text/html; charset=utf-8", "no-cache");
    for (k, v) in extra {
        res.headers_mut().insert(k.clone(), HeaderValue::from_static(v));
    }
    Ok(res)
}

async fn viewer_page(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if !crate::is_valid_stream_name(&name) {
        return Err(ApiError::NotFound);
    }
    if let Some(edge) = page_to_edge(&st, &name) {
        return Ok(edge);
    }
    page("index.html", st.hls.pages.as_ref().map(|p| &p.0), &[(header::X_CONTENT_TYPE_OPTIONS, "nosniff")])
}

async fn embed_page(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if !crate::is_valid_stream_name(&name) {
        return Err(ApiError::NotFound);
    }
    if let Some(edge) = page_to_edge(&st, &name) {
        return Ok(edge);
    }
    page(
        "embed.html",
        st.hls.pages.as_ref().map(|p| &p.1),
        &[(header::CONTENT_SECURITY_POLICY, "frame-ancestors *"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
    )
}

async fn asset(Path(path): Path<String>) -> Result<Response, ApiError> {
    let file = format!("assets/{path}");
    let body = ui::get(&file).ok_or(ApiError::NotFound)?;
    Ok(bytes_response(Bytes::from_static(body), ui::mime(&file), IMMUTABLE))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The router through `oneshot`, no sockets; a stream fed from the real OBS capture.

    use super::*;
    use crate::hub::Now;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use onair_hls::HlsConfig;
    use tower::ServiceExt;

    fn app() -> (Router, Arc<Registry>) {
        let (state, registry) = state(&LimitsSettings::default());
        (router(state), registry)
    }

    fn state(limits: &LimitsSettings) -> (AppState, Arc<Registry>) {
        let registry = Registry::new(HlsConfig::default());
        let state = AppState {
            registry: registry.clone(),
            webrtc: None,
            ice: Arc::new(IceSettings::default()),
            control: crate::control::tests::control(&registry),
            control_token: "test-token".into(),
            refusals: Default::default(),
            metrics: Default::default(),
            reload_waiters: Arc::new(ReloadWaiters::new(limits)),
            hls: Default::default(),
            budget: Default::default(),
        };
        (state, registry)
    }

    async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Bytes) {
        let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    /// Publishes the first `seconds` of the OBS capture into `name`.
    pub(crate) fn publish_capture(registry: &Arc<Registry>, name: &str, seconds: u32) -> crate::hub::Publisher {
        let mut p = registry.publish(name, "127.0.0.1:9".parse().unwrap(), Now::system()).unwrap();
        feed_capture(&mut p, 0..seconds * 1000);
        p
    }

    /// Feeds the tags of the OBS capture whose timestamps are in `ms` to `p`.
    fn feed_capture(p: &mut crate::hub::Publisher, ms: std::ops::Range<u32>) {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
        ))
        .unwrap();
        let now = Now::system();
        for tag in onair_media::flv::read_flv(&file).unwrap().into_iter().filter(|t| ms.contains(&t.timestamp_ms)) {
            match tag.tag_type {
                9 => drop(p.video(tag.body, tag.timestamp_ms, now)),
                8 => drop(p.audio(tag.body, tag.timestamp_ms, now)),
                _ => {}
            }
        }
    }

    async fn call_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    /// The `URI="…"` of the first line starting with `tag`.
    fn uri_of<'a>(playlist: &'a str, tag: &str) -> &'a str {
        let line = playlist.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("no {tag} in {playlist}"));
        line.split("URI=\"").nth(1).unwrap().split('"').next().unwrap()
    }

    #[tokio::test]
    async fn cache_headers_per_kind_of_answer() {
        let (app, registry) = app();
        // Offline: a playlist 404 may be kept a second by a shared cache; a media 404 not at all.
        let (status, headers, _) = call(&app, "GET", "/live/obs/llhls.m3u8").await;
        assert_eq!(
            (status, headers["cache-control"].to_str().unwrap()),
            (StatusCode::NOT_FOUND, "public, max-age=0, s-maxage=1")
        );
        let (status, headers, _) = call(&app, "GET", "/live/obs/abc/0.0.m4s").await;
        assert_eq!((status, headers["cache-control"].to_str().unwrap()), (StatusCode::NOT_FOUND, "no-cache"));
        let _publisher = publish_capture(&registry, "obs", 4);
        let pos = registry.get("obs").unwrap().figures(std::time::Instant::now()).unwrap().position.unwrap();
        let mut all = Vec::new();
        // Non-blocking playlists: a second for shared caches, revalidated by browsers.
        for uri in ["/live/obs/llhls.m3u8", "/live/obs/playlist.m3u8"] {
            let (status, headers, body) = call(&app, "GET", uri).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["cache-control"], "public, max-age=0, s-maxage=1", "{uri}");
            let etag = headers["etag"].to_str().unwrap().to_owned();
            assert_eq!(etag, cache::etag(&body));
            // Revalidation: 304 without a body, same headers.
            let (status, h, body) = call_with(&app, uri, &[("if-none-match", &etag)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri}");
            assert!(body.is_empty());
            assert_eq!((h["etag"].to_str().unwrap(), &h["cache-control"]), (etag.as_str(), &headers["cache-control"]));
            let (status, _, _) = call_with(&app, uri, &[("if-none-match", "\"other\"")]).await;
            assert_eq!(status, StatusCode::OK);
            all.push(headers);
        }
        // Blocking reloads: the same for everyone asking that URL, kept 2 × PART-HOLD-BACK.
        let blocking = format!("/live/obs/llhls.m3u8?_HLS_msn={}&_HLS_part={}", pos.msn, pos.part);
        let (status, headers, body) = call(&app, "GET", &blocking).await;
        let kept = format!("public, max-age={}", cache::blocking_max_age_s(HlsConfig::default().part_target_ms));
        assert_eq!((status, headers["cache-control"].to_str().unwrap()), (StatusCode::OK, kept.as_str()));
        let text = String::from_utf8(body.to_vec()).unwrap();
        all.push(headers);
        // Media: immutable.
        for uri in [uri_of(&text, "#EXT-X-MAP:"), uri_of(&text, "#EXT-X-PART:")] {
            let (status, headers, _) = call(&app, "GET", &format!("/live/obs/{uri}")).await;
            assert_eq!((status, headers["cache-control"].to_str().unwrap()), (StatusCode::OK, IMMUTABLE), "{uri}");
            assert!(headers.get("etag").is_none(), "immutable media needs no validator");
            all.push(headers);
        }
        // Errors: not stored (a part that does not exist yet must not be served as 404 later).
        let session = uri_of(&text, "#EXT-X-MAP:").split('/').next().unwrap();
        let future = format!("/live/obs/{session}/{}.{}.m4s", pos.msn + 1, 5);
        let bad = format!("/live/obs/llhls.m3u8?_HLS_msn={}", pos.msn + 10);
        for (uri, want) in [(future.as_str(), StatusCode::NOT_FOUND), (bad.as_str(), StatusCode::BAD_REQUEST)] {
            let (status, headers, _) = call(&app, "GET", uri).await;
            assert_eq!((status, headers["cache-control"].to_str().unwrap()), (want, "no-cache"), "{uri}");
            all.push(headers);
        }
        // Nothing varies with the request: no Vary, CORS open to all.
        for h in all {
            assert!(h.get("vary").is_none(), "{h:?}");
            assert_eq!(h["access-control-allow-origin"], "*");
        }
    }

    #[tokio::test]
    async fn the_preload_hinted_part_answers_its_headers_at_once_and_its_body_when_complete() {
        let (app, registry) = app();
        let mut publisher = registry.publish("obs", "127.0.0.1:9".parse().unwrap(), Now::system()).unwrap();
        feed_capture(&mut publisher, 0..2000);
        let (_, _, body) = call(&app, "GET", "/live/obs/llhls.m3u8").await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let hint = format!("/live/obs/{}", uri_of(&text, "#EXT-X-PRELOAD-HINT:"));
        let req = Request::builder().uri(&hint).body(Body::empty()).unwrap();
        let res = tokio::time::timeout(Duration::from_millis(500), app.clone().oneshot(req))
            .await
            .expect("the head comes before the part is complete")
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["cache-control"], IMMUTABLE);
        assert!(res.headers().get("content-length").is_none(), "the length is not known yet: chunked");
        let body = tokio::spawn(res.into_body().collect());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!body.is_finished(), "the body waits for the part");
        feed_capture(&mut publisher, 2000..3000);
        let part = tokio::time::timeout(Duration::from_secs(2), body).await.unwrap().unwrap().unwrap().to_bytes();
        assert_eq!(&part[4..8], b"moof");
        // The same part asked again now: the same bytes, with their length.
        let (status, headers, again) = call(&app, "GET", &hint).await;
        assert_eq!((status, again), (StatusCode::OK, part));
        assert!(headers.get("content-length").is_some());
        // A pending part that never comes (the stream ends without it): the body is cut off,
        // so no cache stores it.
        let (_, _, body) = call(&app, "GET", "/live/obs/llhls.m3u8").await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let hint = format!("/live/obs/{}", uri_of(&text, "#EXT-X-PRELOAD-HINT:"));
        let res = app.clone().oneshot(Request::builder().uri(&hint).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = tokio::spawn(res.into_body().collect());
        drop(publisher);
        assert!(tokio::time::timeout(Duration::from_secs(2), body).await.unwrap().unwrap().is_err());
    }

    #[tokio::test]
    async fn a_public_base_url_goes_into_the_pages_and_the_status_links() {
        let (mut st, _) = state(&LimitsSettings::default());
        let settings = HlsSettings { public_base_url: "https://cdn.example.org/tv/".into(), ..Default::default() };
        st.hls = Arc::new(HlsHttp::new(&settings));
        let cdn = router(st);
        for page in ["/show", "/embed/show"] {
            let (status, _, body) = call(&cdn, "GET", page).await;
            assert_eq!(status, StatusCode::OK);
            let html = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                html.contains(r#"<head><meta name="onair-hls-base" content="https://cdn.example.org/tv" />"#),
                "{html}"
            );
            assert!(html.contains("<script"), "the rest of the page is there");
        }
        let (_, _, body) = call(&cdn, "GET", "/api/streams/show").await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["urls"]["llhls"], "https://cdn.example.org/tv/live/show/llhls.m3u8");
        assert_eq!(v["urls"]["hls"], "https://cdn.example.org/tv/live/show/playlist.m3u8");
        assert_eq!(v["urls"]["whep"], "/live/show/whep", "WebRTC stays on OnAir");
        // Without one, the pages are the built ones.
        let (app, _) = app();
        let (_, _, body) = call(&app, "GET", "/show").await;
        assert!(!String::from_utf8(body.to_vec()).unwrap().contains("onair-hls-base"));
        assert_eq!(
            with_hls_base(b"<html><head></head></html>", "https://a.example/?\"<x>&"),
            Bytes::from_static(b"<html><head><meta name=\"onair-hls-base\" content=\"https://a.example/?&quot;&lt;x&gt;&amp;\" /></head></html>")
        );
    }

    #[test]
    fn ice_servers_for_link_headers() {
        let mut ice = IceSettings {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
        };
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // No secret: TURN is not handed out (it could not authenticate anyway).
        let links: Vec<String> = ice.servers(now).iter().flat_map(IceServer::link_headers).collect();
        assert_eq!(links, [r#"<stun:stun.example.org:3478>; rel="ice-server""#]);
        ice.turn_secret = Some("north".into());
        let servers = ice.servers(now);
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:onair"));
        let (user, credential) = onair_webrtc::turn_rest_credentials("north", "onair", Duration::from_secs(3600), now);
        assert_eq!(servers[1].credential.as_deref(), Some(credential.as_str()));
        let links: Vec<String> = servers.iter().flat_map(IceServer::link_headers).collect();
        assert_eq!(
            links[1],
            format!(
                r#"<turn:turn.example.org:3478?transport=udp>; rel="ice-server"; username="{user}"; credential="{credential}"; credential-type="password""#
            )
        );
    }

    #[tokio::test]
    async fn whep_options_hand_out_the_ice_servers() {
        let (mut state, _) = state(&LimitsSettings::default());
        state.ice = Arc::new(IceSettings {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478".into()],
            turn_secret: Some("north".into()),
            turn_ttl: Duration::from_secs(3600),
        });
        let app = router(state);
        let (status, headers, _) = call(&app, "OPTIONS", "/live/x/whep").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let links: Vec<&str> = headers.get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(links.len(), 2, "{links:?}");
        assert!(links[0].starts_with("<stun:stun.example.org:3478>; rel=\"ice-server\""), "{links:?}");
        assert!(links[1].contains("turn:turn.example.org:3478") && links[1].contains("credential="), "{links:?}");
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(headers["access-control-expose-headers"].to_str().unwrap().contains("Link"));
        // Other preflights stay plain.
        let (status, headers, _) = call(&app, "OPTIONS", "/live/x/llhls.m3u8").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(headers.get("link").is_none());
    }

    #[tokio::test]
    async fn offline_everything_is_404_with_cors() {
        let (app, _) = app();
        for uri in ["/live/x/llhls.m3u8", "/live/x/playlist.m3u8", "/live/x/abc/init.mp4", "/live/x/abc/0.0.m4s"] {
            let (status, headers, _) = call(&app, "GET", uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(headers["access-control-allow-origin"], "*", "{uri}");
        }
        let (status, headers, _) = call(&app, "OPTIONS", "/live/x/llhls.m3u8").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(headers["access-control-allow-origin"], "*");
        let (status, _, body) = call(&app, "GET", "/api/streams/x").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["live"], false);
        assert_eq!(v["urls"]["embed"], "/embed/x");
        let (status, _, _) = call(&app, "GET", "/api/streams/a%20b").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn pages_and_assets() {
        let (app, _) = app();
        let (status, headers, _) = call(&app, "GET", "/").await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(headers["location"], "/stream");
        let (status, headers, body) = call(&app, "GET", "/show").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(std::str::from_utf8(&body).unwrap().contains("<script"));
        let (status, headers, _) = call(&app, "GET", "/embed/show").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-security-policy"], "frame-ancestors *");
        assert!(headers.get("x-frame-options").is_none());
        for bad in ["/a.b", "/embed/a.b", "/assets/nope.js", "/x/y/z"] {
            assert_eq!(call(&app, "GET", bad).await.0, StatusCode::NOT_FOUND, "{bad}");
        }
        let js = ui::ASSETS.iter().map(|(p, _)| *p).find(|p| p.ends_with(".js")).expect("a built script");
        let (status, headers, _) = call(&app, "GET", &format!("/{js}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
        assert!(headers["cache-control"].to_str().unwrap().contains("immutable"));
    }

    #[tokio::test]
    async fn live_stream_serves_playlists_parts_and_segments() {
        let (app, registry) = app();
        let _publisher = publish_capture(&registry, "obs", 5);
        let (status, headers, body) = call(&app, "GET", "/live/obs/llhls.m3u8").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], PLAYLIST_TYPE);
        assert_eq!(headers["cache-control"], "public, max-age=0, s-maxage=1");
        let text = String::from_utf8(body.to_vec()).unwrap();
        let map = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).unwrap().trim_end_matches('"');
        let (status, headers, init) = call(&app, "GET", &format!("/live/obs/{map}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "video/mp4");
        assert_eq!(&init[4..8], b"ftyp");
        let part = text.lines().find_map(|l| l.strip_prefix("#EXT-X-PART:")).unwrap();
        let uri = part.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
        let (status, headers, body) = call(&app, "GET", &format!("/live/obs/{uri}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "video/iso.segment");
        assert!(headers["cache-control"].to_str().unwrap().contains("immutable"));
        assert_eq!(&body[4..8], b"moof");
        let seg = text.lines().find(|l| l.ends_with(".m4s") && !l.starts_with('#')).unwrap();
        let (status, headers, body) = call(&app, "GET", &format!("/live/obs/{seg}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[4..8], b"moof");
        // Sent as its parts' buffers back to back, with its exact length.
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        let (msn, session) = (seg.rsplit('/').next().unwrap().trim_end_matches(".m4s"), seg.split('/').next().unwrap());
        let mut parts = Vec::new();
        for i in 0.. {
            let (status, _, part) = call(&app, "GET", &format!("/live/obs/{session}/{msn}.{i}.m4s")).await;
            if status != StatusCode::OK {
                break;
            }
            parts.extend_from_slice(&part);
        }
        assert_eq!(parts, body.to_vec(), "a segment is its parts back to back");
        // A wrong session id (an earlier publish) is gone.
        let stale = format!("/live/obs/zzzzzzzz/{}", uri.split('/').nth(1).unwrap());
        assert_eq!(call(&app, "GET", &stale).await.0, StatusCode::NOT_FOUND);
        let (status, _, body) = call(&app, "GET", "/live/obs/playlist.m3u8").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!String::from_utf8(body.to_vec()).unwrap().contains("#EXT-X-PART"));
    }

    #[tokio::test]
    async fn blocking_reload_waits_for_the_part_and_ends_with_the_stream() {
        let (app, registry) = app();
        let publisher = publish_capture(&registry, "obs", 3);
        let pos = registry.get("obs").unwrap().figures(std::time::Instant::now()).unwrap().position.unwrap();
        let next = format!("/live/obs/llhls.m3u8?_HLS_msn={}&_HLS_part={}", pos.msn, pos.part + 1);
        let waiting = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "GET", &next).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the request must block until the part exists");
        // Far ahead is refused at once.
        let far = format!("/live/obs/llhls.m3u8?_HLS_msn={}&_HLS_part=0", pos.msn + 10);
        assert_eq!(call(&app, "GET", &far).await.0, StatusCode::BAD_REQUEST);
        // The publisher leaves: the waiter is answered (the stream is offline now) without the
        // full hold time.
        drop(publisher);
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(2), waiting).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Bad parameters.
        let _p = publish_capture(&registry, "obs", 2);
        for q in ["_HLS_msn=x", "_HLS_part=1", "_HLS_msn=1&_HLS_part=-3"] {
            let (status, _, body) = call(&app, "GET", &format!("/live/obs/llhls.m3u8?{q}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body:?}");
        }
    }

    #[tokio::test]
    async fn held_requests_per_client_are_capped_with_503_and_retry_after() {
        let limits = LimitsSettings { reload_waiters_per_ip: 2, retry_after_s: 7, ..Default::default() };
        let (st, registry) = state(&limits);
        let (waiters, refusals) = (st.reload_waiters.clone(), st.refusals.clone());
        let app = router(st);
        let publisher = publish_capture(&registry, "obs", 3);
        let pos = registry.get("obs").unwrap().figures(std::time::Instant::now()).unwrap().position.unwrap();
        let next = format!("/live/obs/llhls.m3u8?_HLS_msn={}&_HLS_part={}", pos.msn, pos.part + 1);
        let from = |peer: &str, uri: &str| {
            let mut req = Request::builder().uri(uri).body(Body::empty()).unwrap();
            req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await.unwrap();
                (res.status(), res.headers().clone())
            }
        };
        let held: Vec<_> = (0..2).map(|i| tokio::spawn(from(&format!("192.0.2.1:{}", 1000 + i), &next))).collect();
        let other = tokio::spawn(from("198.51.100.1:1000", &next));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(waiters.in_use(), 3);
        // A third one from the same client: refused at once, in a way players retry.
        let (status, headers) = from("192.0.2.1:2000", &next).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(headers["access-control-allow-origin"], "*");
        // Media requests count too.
        let (status, _) = from("192.0.2.1:2001", "/live/obs/abc/0.0.m4s").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusals.get(Refusal::ReloadWaiters), 2);
        drop(publisher);
        for h in held.into_iter().chain([other]) {
            let (status, _) = tokio::time::timeout(Duration::from_secs(2), h).await.unwrap().unwrap();
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        assert_eq!(waiters.in_use(), 0, "places are given back");
        let _p = publish_capture(&registry, "obs", 1);
        assert_eq!(from("192.0.2.1:3000", "/live/obs/llhls.m3u8").await.0, StatusCode::OK);
    }
}
