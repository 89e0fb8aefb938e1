//! The control API under `/api/control`: what `onair title|chat|status` (and the desktop UI's test
//! shim) use to reach a running engine. Loopback clients only, with the bearer token the engine
//! writes to `<data_dir>/control.json` (mode 0600) at start; `?token=` works too (EventSource
//! cannot set headers).
//!
//! - `GET  /status` → [`crate::control::ControlStatus`]
//! - `POST /streams/{stream}/go-live`, `POST /streams/{stream}/end`
//! - `PUT  /streams/{stream}/title` `{"title": "…"}`
//! - `POST /streams/{stream}/chat` `{"text": "…"}`
//! - `GET  /events[?stream=…]` → Server-Sent Events, one [`crate::events::EngineEvent`] JSON each
//! - `POST /matrix/login` `{"homeserver", "user", "password"}`, `POST /matrix/logout`
//! - `GET  /streams/{stream}/restream` → the destinations ([`crate::restream::RestreamStatus`]);
//!   `PUT /streams/{stream}/restream/{name}` [`crate::restream::DestinationBody`] (add/replace;
//!   the key goes to the keyring), `DELETE …/{name}`, `POST …/{name}/enable|disable`
//!
//! Its state is its own ([`ControlApiState`]: the control and the token); errors are
//! [`ApiError`]s. The request bodies' types are exported to TypeScript like the status types.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::restream::{DestinationBody, RestreamStatus};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::control::{Control, ControlError};
use crate::error::ApiError;

/// The file (in the data dir) that tells local clients where the control API is.
pub const CONTROL_FILE: &str = "control.json";

/// `<data_dir>/control.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlEndpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub token: String,
}

impl ControlEndpoint {
    pub fn path(data_dir: &FsPath) -> PathBuf {
        data_dir.join(CONTROL_FILE)
    }

    /// Writes the file readable by this user only.
    pub fn write(&self, data_dir: &FsPath) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(&tmp, &path)
    }

    /// Reads what a running engine wrote.
    pub fn read(data_dir: &FsPath) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(Self::path(data_dir))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// A fresh random token.
pub fn new_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect()
}

/// What the control API's handlers share.
#[derive(Clone)]
pub struct ControlApiState {
    pub control: Arc<Control>,
    /// The bearer token clients must present.
    pub token: Arc<str>,
}

/// The control API's routes (mounted under `/api/control`), its state applied.
pub fn router<S>(state: ControlApiState) -> Router<S> {
    Router::new()
        .route("/status", get(status))
        .route("/streams/{stream}/go-live", post(go_live))
        .route("/streams/{stream}/end", post(end_stream))
        .route("/streams/{stream}/title", put(set_title))
        .route("/streams/{stream}/chat", post(send_chat))
        .route("/events", get(events))
        .route("/matrix/login", post(matrix_login))
        .route("/matrix/logout", post(matrix_logout))
        .route("/streams/{stream}/restream", get(restream_list))
        .route("/streams/{stream}/restream/{name}", put(restream_put).delete(restream_remove))
        .route("/streams/{stream}/restream/{name}/enable", post(restream_enable))
        .route("/streams/{stream}/restream/{name}/disable", post(restream_disable))
        .route("/budget", put(set_budget))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Loopback peers with the token only.
async fn authorize(
    State(st): State<ControlApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let loopback = peer.is_some_and(|Extension(ConnectInfo(a))| a.ip().is_loopback() || is_mapped_loopback(&a));
    if !loopback {
        return Err(ApiError::NotLoopback);
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let given = bearer.or(q.get("token").map(String::as_str));
    if !given.is_some_and(|t| constant_time_eq(t.as_bytes(), st.token.as_bytes())) {
        return Err(ApiError::BadToken);
    }
    Ok(next.run(req).await)
}

fn is_mapped_loopback(a: &SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `204 No Content`, or the error.
fn done(result: Result<(), ControlError>) -> Result<StatusCode, ApiError> {
    result.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from)
}

/// A JSON body, or 400 naming the expected shape.
fn json<T>(body: Result<Json<T>, JsonRejection>, shape: &str) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError::BadRequest(format!("expected {shape}: {e}")))
}

async fn status(State(st): State<ControlApiState>) -> Json<crate::control::ControlStatus> {
    Json(st.control.control_status())
}

async fn go_live(State(st): State<ControlApiState>, Path(stream): Path<String>) -> Result<StatusCode, ApiError> {
    done(st.control.go_live(&stream))
}

async fn end_stream(State(st): State<ControlApiState>, Path(stream): Path<String>) -> Result<StatusCode, ApiError> {
    done(st.control.end_stream(&stream))
}

/// `PUT /streams/{stream}/title`.
#[derive(Debug, Serialize, Deserialize, ts_rs::TS)]
pub struct TitleBody {
    pub title: String,
}

async fn set_title(
    State(st): State<ControlApiState>,
    Path(stream): Path<String>,
    body: Result<Json<TitleBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json(body, r#"{"title": "…"}"#)?;
    done(st.control.set_title(&stream, &b.title).await)
}

/// `PUT /budget`: the upload budget in Mb/s (0: none), until the engine stops.
#[derive(Debug, Serialize, Deserialize, ts_rs::TS)]
pub struct BudgetBody {
    pub upload_mbps: f64,
}

async fn set_budget(
    State(st): State<ControlApiState>,
    body: Result<Json<BudgetBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json(body, r#"{"upload_mbps": 20}"#)?;
    done(st.control.set_upload_budget(b.upload_mbps))
}

/// `POST /streams/{stream}/chat`.
#[derive(Debug, Serialize, Deserialize, ts_rs::TS)]
pub struct ChatBody {
    pub text: String,
}

async fn send_chat(
    State(st): State<ControlApiState>,
    Path(stream): Path<String>,
    body: Result<Json<ChatBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json(body, r#"{"text": "…"}"#)?;
    done(st.control.send_chat(&stream, &b.text).await)
}

/// `POST /matrix/login`.
#[derive(Debug, Serialize, Deserialize, ts_rs::TS)]
pub struct LoginBody {
    pub homeserver: String,
    pub user: String,
    pub password: String,
}

async fn matrix_login(
    State(st): State<ControlApiState>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json(body, r#"{"homeserver", "user", "password"}"#)?;
    done(st.control.matrix_login(&b.homeserver, &b.user, &b.password).await)
}

async fn matrix_logout(State(st): State<ControlApiState>) -> Result<StatusCode, ApiError> {
    done(st.control.matrix_logout().await)
}

async fn restream_list(
    State(st): State<ControlApiState>,
    Path(stream): Path<String>,
) -> Result<Json<Vec<RestreamStatus>>, ApiError> {
    check_stream(&stream)?;
    Ok(Json(st.control.restream().status(&stream)))
}

async fn restream_put(
    State(st): State<ControlApiState>,
    Path((stream, name)): Path<(String, String)>,
    body: Result<Json<DestinationBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    check_stream(&stream)?;
    let b = json(body, r#"{"url": "rtmp://host/app", "key": "…", "enabled": true}"#)?;
    // The key goes to the OS keyring: a blocking call, off the async workers.
    blocking(move || st.control.restream().put(&stream, &name, b)).await
}

/// Runs a restream edit that touches the keyring on the blocking pool.
async fn blocking(
    edit: impl FnOnce() -> Result<(), crate::restream::RestreamError> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    match tokio::task::spawn_blocking(edit).await {
        Ok(result) => result.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from),
        Err(e) => Err(crate::restream::RestreamError::Interrupted(e.to_string()).into()),
    }
}

async fn restream_remove(
    State(st): State<ControlApiState>,
    Path((stream, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || st.control.restream().remove(&stream, &name)).await
}

async fn restream_enable(
    State(st): State<ControlApiState>,
    Path((stream, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    st.control.restream().set_enabled(&stream, &name, true)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restream_disable(
    State(st): State<ControlApiState>,
    Path((stream, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    st.control.restream().set_enabled(&stream, &name, false)?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_stream(stream: &str) -> Result<(), ApiError> {
    if crate::is_valid_stream_name(stream) {
        Ok(())
    } else {
        Err(ApiError::Control(ControlError::BadStream(stream.into())))
    }
}

/// Engine events as Server-Sent Events; `?stream=` keeps that stream's events (and the Matrix
/// state, which concerns every stream).
async fn events(State(st): State<ControlApiState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let rx = st.control.subscribe();
    let only = q.get("stream").cloned();
    Sse::new(event_stream(rx, only)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn event_stream(
    rx: broadcast::Receiver<crate::events::EngineEvent>,
    only: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, only), |(mut rx, only)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if only.as_deref().is_some_and(|s| ev.stream().is_some_and(|e| e != s)) {
                        continue;
                    }
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(Event::default().data(data)), (rx, only)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> (Router, std::sync::Arc<crate::hub::Registry>) {
        let registry = crate::hub::Registry::new(onair_hls::HlsConfig::default());
        let state = crate::http::AppState {
            registry: registry.clone(),
            webrtc: None,
            ice: Default::default(),
            control: crate::control::tests::control(&registry),
            control_token: "sesame".into(),
            refusals: Default::default(),
            metrics: Default::default(),
            reload_waiters: Default::default(),
            hls: Default::default(),
            budget: Default::default(),
        };
        (crate::http::router(state), registry)
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        peer: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body.to_owned())).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        (status, String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).into_owned())
    }

    #[tokio::test]
    async fn loopback_and_token_only() {
        let (app, _) = app();
        let (code, body) = call(&app, "GET", "/api/control/status", "192.168.1.9:5000", Some("sesame"), "").await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        let (code, body) = call(&app, "GET", "/api/control/status", "127.0.0.1:5000", None, "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        let (code, _) = call(&app, "GET", "/api/control/status", "127.0.0.1:5000", Some("sesam"), "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, body) = call(&app, "GET", "/api/control/status", "127.0.0.1:5000", Some("sesame"), "").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (code, _) =
            call(&app, "GET", "/api/control/status?token=sesame", "[::ffff:127.0.0.1]:5000", None, "").await;
        assert_eq!(code, StatusCode::OK);
    }

    #[tokio::test]
    async fn titles_and_go_live_without_matrix() {
        let (app, registry) = app();
        let t = Some("sesame");
        let lo = "127.0.0.1:1";
        let (code, body) =
            call(&app, "PUT", "/api/control/streams/show/title", lo, t, r#"{"title":"Friday 🎮"}"#).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
        let (_, body) = call(&app, "GET", "/api/streams/show", lo, None, "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["title"], "Friday 🎮");
        assert_eq!(v["chat"], serde_json::Value::Null, "no Matrix: no chat");
        let (code, body) = call(&app, "PUT", "/api/control/streams/show/title", lo, t, "nope").await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        let (code, body) = call(&app, "PUT", "/api/control/streams/a%2Fb/title", lo, t, r#"{"title":"x"}"#).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        let (code, body) = call(&app, "POST", "/api/control/streams/show/chat", lo, t, r#"{"text":"hi"}"#).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("chat is not available: off"), "{body}");

        registry.set_require_go_live(true);
        assert!(!registry.is_armed("show"));
        let (code, _) = call(&app, "POST", "/api/control/streams/show/go-live", lo, t, "").await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        assert!(registry.is_armed("show"));
        let (_, body) = call(&app, "GET", "/api/control/status", lo, t, "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let show = v["streams"].as_array().unwrap().iter().find(|s| s["name"] == "show").unwrap();
        assert_eq!(show["armed"], true);
        assert_eq!(show["title"], "Friday 🎮");
        assert_eq!(v["matrix"]["state"], "off");
        let (code, _) = call(&app, "POST", "/api/control/streams/show/end", lo, t, "").await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        assert!(!registry.is_armed("show"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restream_destinations_are_edited_and_their_keys_never_shown() {
        let (app, _) = app();
        let (t, lo) = (Some("sesame"), "127.0.0.1:1");
        let base = "/api/control/streams/show/restream";
        let (code, body) = call(&app, "PUT", &format!("{base}/tw"), lo, t, r#"{"url":"rtmp://h/app"}"#).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "no key stored yet: {body}");
        assert!(body.contains("needs a stream key"), "{body}");
        let (code, body) = call(&app, "PUT", &format!("{base}/tw"), lo, t, r#"{"url":"http://h/app","key":"k"}"#).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        let put = r#"{"url":"rtmp://h/app","key":"Sekrit-Key-1"}"#;
        let (code, body) = call(&app, "PUT", &format!("{base}/tw"), lo, t, put).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
        // Replacing without a key keeps the stored one.
        let (code, _) = call(&app, "PUT", &format!("{base}/tw"), lo, t, r#"{"url":"rtmp://h2/app"}"#).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, _) = call(&app, "POST", &format!("{base}/tw/disable"), lo, t, "").await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (_, list) = call(&app, "GET", base, lo, t, "").await;
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(
            (v[0]["name"].as_str(), v[0]["url"].as_str(), v[0]["enabled"].as_bool()),
            (Some("tw"), Some("rtmp://h2/app"), Some(false))
        );
        assert_eq!(v[0]["state"], "idle");
        let (_, status) = call(&app, "GET", "/api/streams/show", lo, None, "").await;
        assert!(status.contains("\"restream\":[{"), "{status}");
        assert!(!list.contains("Sekrit") && !status.contains("Sekrit"), "a key was shown");
        let (code, _) = call(&app, "DELETE", &format!("{base}/nope"), lo, t, "").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = call(&app, "DELETE", &format!("{base}/tw"), lo, t, "").await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (_, list) = call(&app, "GET", base, lo, t, "").await;
        assert_eq!(list, "[]");
        let (code, _) = call(&app, "GET", base, "10.0.0.1:1", t, "").await;
        assert_eq!(code, StatusCode::FORBIDDEN, "loopback only");
    }

    #[test]
    fn control_file_is_private() {
        let dir = std::env::temp_dir().join(format!("onair-control-file-{}", std::process::id()));
        let ep = ControlEndpoint { url: "http://127.0.0.1:1".into(), token: new_token() };
        ep.write(&dir).unwrap();
        ep.write(&dir).unwrap();
        assert_eq!(ControlEndpoint::read(&dir).unwrap(), ep);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ControlEndpoint::path(&dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
