//! Secrets behind a narrow trait: the OS keyring in production, memory in unit tests.
//!
//! Secrets never reach logs or config files: error messages name the entry, never its value.
//! Which source wins (environment or keyring) is decided in [`crate::startup`].

use std::collections::HashMap;
use std::sync::Mutex;

use rand::Rng;
use rand::distr::Alphanumeric;

/// The keyring service name every OnAir secret is filed under.
pub const SERVICE: &str = "onair";
/// The keyring entry holding the stream signing secret.
pub const SIGNING_KEY: &str = "signing-key";
/// The environment variable that overrides the signing secret (servers without a keyring, tests).
pub const SIGNING_KEY_ENV: &str = "ONAIR_SIGNING_KEY";
/// The keyring entry holding the TURN shared secret (coturn `use-auth-secret`).
pub const TURN_SECRET: &str = "turn-secret";
/// The environment variable that overrides the TURN shared secret.
pub const TURN_SECRET_ENV: &str = "ONAIR_TURN_SECRET";

/// What the OS keyring is called on this platform, for messages.
pub const KEYRING_NAME: &str = if cfg!(windows) {
    "the Windows Credential Manager"
} else if cfg!(target_os = "macos") {
    "the macOS Keychain"
} else {
    "the OS keyring"
};

/// How to get a keyring on this platform, for the error when none is reachable.
const KEYRING_FIX: &str = if cfg!(windows) {
    "run OnAir as a signed-in Windows user (the Credential Manager belongs to the user's profile)"
} else if cfg!(target_os = "macos") {
    "run OnAir in a signed-in macOS session (the login Keychain)"
} else {
    "run OnAir in a desktop session with a Secret Service (GNOME Keyring, KWallet), or on a headless \
     server start one (`dbus-run-session` + `gnome-keyring-daemon --unlock`)"
};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no OS keyring is reachable to keep the {entry:?} secret ({reason}). Fix: {KEYRING_FIX}, or set \
         {SIGNING_KEY_ENV} to a long random string"
    )]
    Unavailable { entry: String, reason: String },
    #[error("the keyring refused the {entry:?} secret: {reason}")]
    Store { entry: String, reason: String },
}

/// Where secrets live.
pub trait SecretStore: Send + Sync {
    fn get(&self, entry: &str) -> Result<Option<String>, SecretError>;
    fn set(&self, entry: &str, value: &str) -> Result<(), SecretError>;
    /// Removing a missing entry is not an error.
    fn delete(&self, entry: &str) -> Result<(), SecretError>;
}

/// The OS keyring (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyringStore;

impl KeyringStore {
    fn entry(entry: &str) -> Result<keyring::Entry, SecretError> {
        keyring::Entry::new(SERVICE, entry).map_err(|e| classify(entry, e))
    }
}

fn classify(entry: &str, e: keyring::Error) -> SecretError {
    match e {
        keyring::Error::NoStorageAccess(_) | keyring::Error::PlatformFailure(_) | keyring::Error::NoDefaultStore => {
            SecretError::Unavailable { entry: entry.into(), reason: e.to_string() }
        }
        other => SecretError::Store { entry: entry.into(), reason: other.to_string() },
    }
}

impl SecretStore for KeyringStore {
    fn get(&self, entry: &str) -> Result<Option<String>, SecretError> {
        match Self::entry(entry)?.get_password() {
            Ok(v) => Ok(Some(v)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(classify(entry, e)),
        }
    }

    fn set(&self, entry: &str, value: &str) -> Result<(), SecretError> {
        Self::entry(entry)?.set_password(value).map_err(|e| classify(entry, e))
    }

    fn delete(&self, entry: &str) -> Result<(), SecretError> {
        match Self::entry(entry)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(classify(entry, e)),
        }
    }
}

/// Secrets in memory, for tests and for explicit overrides.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<HashMap<String, String>>);

impl SecretStore for MemoryStore {
    fn get(&self, entry: &str) -> Result<Option<String>, SecretError> {
        Ok(self.0.lock().expect("not poisoned").get(entry).cloned())
    }

    fn set(&self, entry: &str, value: &str) -> Result<(), SecretError> {
        self.0.lock().expect("not poisoned").insert(entry.into(), value.into());
        Ok(())
    }

    fn delete(&self, entry: &str) -> Result<(), SecretError> {
        self.0.lock().expect("not poisoned").remove(entry);
        Ok(())
    }
}

/// The signing secret, as the front ends resolve it.
#[derive(Clone)]
pub struct SigningKey(String);

impl SigningKey {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The key kept in `store`, created there on first use; `true` when it was created now.
    /// (The front ends also honour `ONAIR_SIGNING_KEY`: see [`crate::startup::signing_key`].)
    pub fn from_store(store: &dyn SecretStore) -> Result<(Self, bool), SecretError> {
        if let Some(v) = store.get(SIGNING_KEY)? {
            return Ok((Self(v), false));
        }
        let fresh: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
        store.set(SIGNING_KEY, &fresh)?;
        Ok((Self(fresh), true))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_generated_once_and_kept() {
        let store = MemoryStore::default();
        let (a, generated) = SigningKey::from_store(&store).unwrap();
        assert!(generated);
        assert_eq!(a.as_bytes().len(), 32);
        let (b, generated) = SigningKey::from_store(&store).unwrap();
        assert!(!generated);
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = SigningKey::new("hunter2");
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
