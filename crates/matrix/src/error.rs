//! Errors, worded for the streamer. None of them ever carries a token or a password.

use matrix_sdk::ruma::api::error::ErrorKind;

/// Everything that can go wrong on the Matrix side.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the Matrix homeserver {homeserver} is unreachable: {reason}")]
    Unreachable { homeserver: String, reason: String },
    #[error("the Matrix homeserver refused the login of {user}: wrong user name or password")]
    BadCredentials { user: String },
    #[error("the Matrix session is no longer valid (logged out from another device?): log in again")]
    LoggedOut,
    #[error("Matrix configuration: {0}")]
    Config(String),
    #[error("the secret store failed to keep the Matrix session: {0}")]
    Store(String),
    #[error("the Matrix room {alias} exists but cannot be used: {reason}")]
    Room { alias: String, reason: String },
    #[error("the Matrix homeserver refused to {action}: {reason}")]
    Refused { action: &'static str, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The two questions asked of every failed request: did it reach the server, and is the session
/// still good?
pub(crate) trait Classify {
    fn api_kind(&self) -> Option<&ErrorKind>;
    fn api_message(&self) -> Option<String>;
    fn is_network(&self) -> bool;
    fn describe(&self) -> String;
}

impl Classify for matrix_sdk::HttpError {
    fn api_kind(&self) -> Option<&ErrorKind> {
        self.client_api_error_kind()
    }

    fn api_message(&self) -> Option<String> {
        self.as_client_api_error().map(|e| e.to_string())
    }

    fn is_network(&self) -> bool {
        match self {
            matrix_sdk::HttpError::Reqwest(_) => true,
            matrix_sdk::HttpError::Cached(inner) => inner.is_network(),
            // A gateway in front of a stopped homeserver answers 502/503/504 without a Matrix error.
            matrix_sdk::HttpError::Api(e) => {
                self.as_client_api_error().is_none_or(|c| c.status_code.is_server_error())
                    && !matches!(**e, matrix_sdk::ruma::api::error::FromHttpResponseError::Deserialization(_))
            }
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            // reqwest's own message names the URL (with the whole sync filter); the innermost
            // cause ("Connection refused", "failed to lookup address", a TLS error) is what helps.
            matrix_sdk::HttpError::Reqwest(e) => {
                let mut innermost: &dyn std::error::Error = e;
                while let Some(source) = innermost.source() {
                    innermost = source;
                }
                let what = if e.is_timeout() {
                    "no answer in time"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                if std::ptr::addr_eq(innermost, e as &dyn std::error::Error) {
                    what.to_owned()
                } else {
                    format!("{what}: {innermost}")
                }
            }
            matrix_sdk::HttpError::Cached(inner) => inner.describe(),
            other => other.to_string(),
        }
    }
}

impl Classify for matrix_sdk::Error {
    fn api_kind(&self) -> Option<&ErrorKind> {
        self.client_api_error_kind()
    }

    fn api_message(&self) -> Option<String> {
        self.as_client_api_error().map(|e| e.to_string())
    }

    fn is_network(&self) -> bool {
        match self {
            matrix_sdk::Error::Http(e) => e.is_network(),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            matrix_sdk::Error::Http(e) => e.describe(),
            other => other.to_string(),
        }
    }
}

impl Error {
    /// Maps a failed request to the streamer's view of it.
    pub(crate) fn from_sdk(action: &'static str, homeserver: &str, e: &impl Classify) -> Self {
        if matches!(e.api_kind(), Some(ErrorKind::UnknownToken { .. })) {
            return Error::LoggedOut;
        }
        if e.is_network() {
            return Error::Unreachable { homeserver: homeserver.into(), reason: e.describe() };
        }
        Error::Refused { action, reason: e.api_message().unwrap_or_else(|| e.describe()) }
    }
}
