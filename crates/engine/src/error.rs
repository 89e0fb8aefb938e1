//! The one error type of the engine's HTTP routes: each variant knows its status code, and its
//! response ([`IntoResponse`]) is that code with the reason as a plain-text body, after one log
//! line naming the status and the reason (debug for what clients get wrong, warn for our failures).
//! A WHEP offer refused by a WebRTC limit is `503` with `Retry-After`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use onair_webrtc::WhepError;

use crate::control::ControlError;
use crate::hub::ServeError;
use crate::restream::RestreamError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route, page or asset.
    #[error("not found")]
    NotFound,
    /// A playlist, part or segment that cannot be served (offline, gone, too far ahead, not in time).
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    #[error("WebRTC playback is disabled")]
    WebrtcDisabled,
    #[error("no such WHEP session")]
    NoWhepSession,
    /// An offer the WebRTC server did not answer.
    #[error(transparent)]
    Whep(#[from] WhepError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Restream(#[from] RestreamError),
    #[error("the control API only answers on this machine (loopback)")]
    NotLoopback,
    #[error("/metrics only answers on this machine (metrics.loopback_only)")]
    MetricsNotLoopback,
    #[error("missing or wrong control token (a running engine writes it to control.json in its data dir)")]
    BadToken,
    #[error("page missing from build")]
    PageMissing,
    /// A new direct viewer beyond the upload budget (`[budget]`), with no edge to send it to.
    #[error("the stream is full: this connection's upload is taken by the viewers already watching; try again later")]
    Full { retry_after_s: u64 },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::WebrtcDisabled | ApiError::NoWhepSession => StatusCode::NOT_FOUND,
            ApiError::Serve(e) => match e {
                ServeError::Offline(_) | ServeError::Gone => StatusCode::NOT_FOUND,
                ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ServeError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Whep(e) => match e {
                WhepError::BadOffer(_) | WhepError::Incompatible(_) => StatusCode::BAD_REQUEST,
                WhepError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                WhepError::Offline => StatusCode::NOT_FOUND,
                WhepError::Unavailable | WhepError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                WhepError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Control(e) => match e {
                ControlError::BadStream(_) | ControlError::BadInput(_) => StatusCode::BAD_REQUEST,
                ControlError::NoChat(_) => StatusCode::CONFLICT,
                ControlError::Matrix(_) => StatusCode::BAD_GATEWAY,
                ControlError::Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Restream(e) => match e {
                RestreamError::Invalid(_) | RestreamError::NoKey(_) => StatusCode::BAD_REQUEST,
                RestreamError::NoSuch { .. } => StatusCode::NOT_FOUND,
                RestreamError::Secret(_) | RestreamError::Save { .. } | RestreamError::Interrupted(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::NotLoopback | ApiError::MetricsNotLoopback => StatusCode::FORBIDDEN,
            ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::PageMissing => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.to_string();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(status = status.as_u16(), %reason, "HTTP request failed");
        } else {
            tracing::debug!(status = status.as_u16(), %reason, "HTTP request refused");
        }
        let mut res = (status, [(header::CACHE_CONTROL, "no-cache")], format!("{reason}\n")).into_response();
        if let ApiError::Whep(WhepError::Busy { retry_after_s, .. }) | ApiError::Full { retry_after_s } = self {
            res.headers_mut().insert(header::RETRY_AFTER, retry_after_s.into());
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_status_and_reason() {
        let cases = [
            (ApiError::Serve(ServeError::Offline("x".into())), 404, "stream \"x\" is offline\n"),
            (ApiError::Serve(ServeError::Timeout), 503, "the requested part did not appear in time\n"),
            (ApiError::Control(ControlError::NoChat("off".into())), 409, "chat is not available: off\n"),
            (ApiError::Whep(WhepError::Incompatible("no H.264".into())), 400, "incompatible offer: no H.264\n"),
            (ApiError::Whep(WhepError::TooLarge { bytes: 9, limit: 8 }), 413, "the offer is 9 bytes, more than 8\n"),
            (ApiError::Whep(WhepError::Offline), 404, "the stream is offline\n"),
            (ApiError::Whep(WhepError::Unavailable), 503, "the WebRTC server is not running\n"),
            (
                ApiError::Whep(WhepError::Busy { limit: "webrtc_sessions_per_ip", max: 8, retry_after_s: 10 }),
                503,
                "too many WebRTC sessions: the webrtc_sessions_per_ip limit (8) is reached; play HLS or retry in 10 s\n",
            ),
            (
                ApiError::BadToken,
                401,
                "missing or wrong control token (a running engine writes it to control.json in its data dir)\n",
            ),
        ];
        for (e, code, body) in cases {
            let busy = matches!(e, ApiError::Whep(WhepError::Busy { .. }));
            let res = e.into_response();
            assert_eq!(res.status().as_u16(), code);
            assert_eq!(res.headers()["cache-control"], "no-cache");
            // Only a refusal by a limit says when to come back.
            assert_eq!(res.headers().get("retry-after").map(|v| v.to_str().unwrap()), busy.then_some("10"));
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), body.as_bytes());
        }
    }
}
