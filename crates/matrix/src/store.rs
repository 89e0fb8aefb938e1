//! Where the Matrix session (access token, device id) is kept between runs.
//!
//! The engine adapts its OS-keyring `SecretStore` to [`SessionStore`]; this crate only needs plain
//! get/set/delete of strings, so it stays free of the engine.

use std::collections::HashMap;
use std::sync::Mutex;

use matrix_sdk::authentication::matrix::MatrixSession;
use serde::{Deserialize, Serialize};

/// The secret-store entry holding the session JSON.
pub const SESSION_ENTRY: &str = "matrix-session";

/// A failure of the secret store, described without the secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Secret strings by entry name (the OS keyring in OnAir, memory in tests).
pub trait SessionStore: Send + Sync {
    fn get(&self, entry: &str) -> Result<Option<String>, StoreError>;
    fn set(&self, entry: &str, value: &str) -> Result<(), StoreError>;
    /// Removing a missing entry is not an error.
    fn delete(&self, entry: &str) -> Result<(), StoreError>;
}

/// Secrets in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<HashMap<String, String>>);

impl SessionStore for MemoryStore {
    fn get(&self, entry: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.lock().expect("not poisoned").get(entry).cloned())
    }

    fn set(&self, entry: &str, value: &str) -> Result<(), StoreError> {
        self.0.lock().expect("not poisoned").insert(entry.into(), value.into());
        Ok(())
    }

    fn delete(&self, entry: &str) -> Result<(), StoreError> {
        self.0.lock().expect("not poisoned").remove(entry);
        Ok(())
    }
}

/// What is saved under [`SESSION_ENTRY`].
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSession {
    /// `MatrixConfig::homeserver` as configured when logging in (a changed config means a new login).
    pub configured_homeserver: String,
    /// The homeserver URL it resolved to, so a restore needs no discovery request.
    pub homeserver_url: String,
    pub session: MatrixSession,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("homeserver_url", &self.homeserver_url)
            .field("user_id", &self.session.meta.user_id)
            .field("device_id", &self.session.meta.device_id)
            .finish_non_exhaustive()
    }
}
