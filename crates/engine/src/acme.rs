//! Automatic certificates over ACME (RFC 8555) with instant-acme, from any CA's directory (Let's
//! Encrypt by default): one order for `[tls] domain`, proven with the HTTP-01 challenge answered
//! by OnAir's own plain HTTP server ([`Challenges`], served at
//! `/.well-known/acme-challenge/<token>`), finalized with a fresh key (rcgen) whose CSR names
//! the domain. The ACME account's credentials are kept in the [`SecretStore`] (entry
//! [`ACCOUNT_ENTRY`]) like the other secrets; when the store cannot keep them (no keyring on a
//! headless server) they live in memory for this run and a new account is made at the next start.
//!
//! TLS-ALPN-01 is not offered: HTTP-01 on the plain HTTP port (80 from the internet) is the one
//! challenge OnAir answers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::TlsSettings;
use crate::secrets::SecretStore;

/// The secret store entry with the ACME account (JSON: the directory and the credentials).
pub const ACCOUNT_ENTRY: &str = "acme-account";

/// Why no certificate came from the CA, in plain words.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("no domain is set: [tls] domain (ONAIR_TLS_DOMAIN) names the host the certificate is for")]
    NoDomain,
    #[error("cannot reach the ACME CA at {directory}: {reason}")]
    Unreachable { directory: String, reason: String },
    #[error("the ACME CA refused: {0}")]
    Refused(String),
    #[error(
        "the ACME CA could not validate {domain} over HTTP-01 ({reason}): check that {domain} resolves to this \
         network and that port 80 reaches OnAir's HTTP port"
    )]
    Validation { domain: String, reason: String },
    #[error("cannot make the certificate request: {0}")]
    Csr(String),
}

/// Pending HTTP-01 challenges: token → key authorization.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    /// The answer to `GET /.well-known/acme-challenge/<token>`.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0.read().expect("not poisoned").get(token).cloned()
    }

    fn insert(&self, token: &str, key_authorization: &str) {
        self.0.write().expect("not poisoned").insert(token.into(), key_authorization.into());
    }

    fn remove(&self, token: &str) {
        self.0.write().expect("not poisoned").remove(token);
    }
}

/// The account, once made or restored, for the next orders of this run.
#[derive(Default)]
pub struct AccountCache {
    account: Option<Account>,
}

/// What the store keeps.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

fn builder(settings: &TlsSettings) -> Result<instant_acme::AccountBuilder, AcmeError> {
    let unreachable = |e: instant_acme::Error| AcmeError::Unreachable {
        directory: settings.acme_directory.clone(),
        reason: e.to_string(),
    };
    if settings.acme_ca_file.as_os_str().is_empty() {
        Account::builder().map_err(unreachable)
    } else {
        Account::builder_with_root(&settings.acme_ca_file).map_err(|e| AcmeError::Unreachable {
            directory: settings.acme_directory.clone(),
            reason: format!("cannot use tls.acme_ca_file {}: {e}", settings.acme_ca_file.display()),
        })
    }
}

/// Plain words for a failed request to the CA: a problem document is the CA's answer, anything
/// else means it was not reached.
fn classify(settings: &TlsSettings, e: instant_acme::Error) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) => AcmeError::Refused(p.to_string()),
        other => AcmeError::Unreachable { directory: settings.acme_directory.clone(), reason: error_chain(&other) },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        source = inner.source();
    }
    s
}

async fn account(
    settings: &TlsSettings,
    store: &Arc<dyn SecretStore>,
    cache: &mut AccountCache,
) -> Result<Account, AcmeError> {
    if let Some(a) = &cache.account {
        return Ok(a.clone());
    }
    let stored = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.get(ACCOUNT_ENTRY)).await.ok()
    };
    let stored = match stored {
        Some(Ok(v)) => v.and_then(|v| serde_json::from_str::<StoredAccount>(&v).ok()),
        Some(Err(e)) => {
            warn!("cannot read the ACME account from the secret store ({e}): using a new account");
            None
        }
        None => None,
    };
    if let Some(s) = stored.filter(|s| s.directory == settings.acme_directory) {
        let a = builder(settings)?.from_credentials(s.credentials).await.map_err(|e| classify(settings, e))?;
        info!("ACME account from the secret store");
        cache.account = Some(a.clone());
        return Ok(a);
    }
    let email = settings.acme_email.trim();
    let contact = format!("mailto:{email}");
    let contacts: Vec<&str> = if email.is_empty() { Vec::new() } else { vec![contact.as_str()] };
    let (a, credentials) = builder(settings)?
        .create(
            &NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false },
            settings.acme_directory.clone(),
            None,
        )
        .await
        .map_err(|e| classify(settings, e))?;
    info!("ACME account created");
    let value = serde_json::to_string(&StoredAccount { directory: settings.acme_directory.clone(), credentials })
        .expect("credentials serialize");
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.set(ACCOUNT_ENTRY, &value)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("cannot keep the ACME account in the secret store ({e}): kept for this run only"),
        Err(_) => {}
    }
    cache.account = Some(a.clone());
    Ok(a)
}

/// Obtains a certificate for `settings.domain`: returns the PEM chain (leaf first) and the PEM
/// private key. The HTTP-01 answers are in `challenges` while the CA validates.
pub async fn obtain(
    settings: &TlsSettings,
    store: &Arc<dyn SecretStore>,
    cache: &mut AccountCache,
    challenges: &Challenges,
) -> Result<(String, String), AcmeError> {
    let domain = settings.domain.trim().to_ascii_lowercase();
    if domain.is_empty() {
        return Err(AcmeError::NoDomain);
    }
    let account = account(settings, store, cache).await?;
    let result = order(settings, &account, &domain, challenges).await;
    if let Err(AcmeError::Refused(why)) = &result
        && (why.contains("accountDoesNotExist") || why.contains("unauthorized"))
    {
        // The CA no longer knows this account (a test CA restarted, an account deactivated):
        // make a new one next time.
        cache.account = None;
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.delete(ACCOUNT_ENTRY)).await;
    }
    result
}

async fn order(
    settings: &TlsSettings,
    account: &Account,
    domain: &str,
    challenges: &Challenges,
) -> Result<(String, String), AcmeError> {
    let identifiers = [Identifier::Dns(domain.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| classify(settings, e))?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| classify(settings, e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Validation {
                        domain: domain.into(),
                        reason: format!("authorization {other:?}"),
                    });
                }
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Refused("the CA offers no HTTP-01 challenge for this domain".into()))?;
            challenges.insert(&challenge.token, challenge.key_authorization().as_str());
            tokens.push(challenge.token.clone());
            challenge.set_ready().await.map_err(|e| classify(settings, e))?;
        }
        let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await.map_err(|e| match e {
            instant_acme::Error::Api(p) => AcmeError::Validation { domain: domain.into(), reason: p.to_string() },
            other => classify(settings, other),
        })?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Validation { domain: domain.into(), reason: format!("order {status:?}") });
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Csr(e.to_string()))?;
        let mut params =
            rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| AcmeError::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| AcmeError::Csr(e.to_string()))?;
        order.finalize_csr(csr.der()).await.map_err(|e| classify(settings, e))?;
        let chain = order.poll_certificate(&retries).await.map_err(|e| classify(settings, e))?;
        Ok((chain, key.serialize_pem()))
    }
    .await;
    for t in &tokens {
        challenges.remove(t);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_answer_known_tokens_only() {
        let c = Challenges::default();
        c.insert("tok", "tok.thumb");
        assert_eq!(c.get("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.get("other"), None);
        c.remove("tok");
        assert_eq!(c.get("tok"), None);
    }

    #[tokio::test]
    async fn no_domain_is_explained_before_any_request() {
        let settings = TlsSettings { mode: crate::config::TlsMode::Acme, ..TlsSettings::default() };
        let store: Arc<dyn SecretStore> = Arc::new(crate::secrets::MemoryStore::default());
        let e = obtain(&settings, &store, &mut AccountCache::default(), &Challenges::default()).await.unwrap_err();
        assert!(e.to_string().contains("tls.domain") || e.to_string().contains("[tls] domain"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_ca_is_named() {
        let settings = TlsSettings {
            mode: crate::config::TlsMode::Acme,
            domain: "tv.example.org".into(),
            acme_directory: "https://127.0.0.1:9/dir".into(),
            ..TlsSettings::default()
        };
        let store: Arc<dyn SecretStore> = Arc::new(crate::secrets::MemoryStore::default());
        let e = obtain(&settings, &store, &mut AccountCache::default(), &Challenges::default()).await.unwrap_err();
        assert!(matches!(e, AcmeError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("https://127.0.0.1:9/dir"), "{e}");
    }
}
