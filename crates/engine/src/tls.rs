//! HTTPS and RTMPS: the certificate in use (swapped in place at renewal), the rustls server
//! configurations built on it, where certificates are kept, and the task that keeps one in use —
//! the user's files (`[tls] mode = "file"`) or automatic certificates ([`crate::acme`],
//! `mode = "acme"`).
//!
//! The decisions are plain functions of their inputs and the time ([`renewal_due`],
//! [`retry_delay`], [`redirect_location`], [`https_base`]); the I/O around them is in
//! [`CertManager`]. A certificate problem never stops the engine: the state turns `error` (with a
//! plain-words reason, logged once per attempt, no secret), plain HTTP goes on, and the manager
//! tries again with a bounded backoff.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::acme::{self, Challenges};
use crate::config::{TlsMode, TlsSettings};
use crate::control::Control;
use crate::secrets::SecretStore;
use crate::status::HttpsStatus;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no certificate found in the PEM data (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("the certificate PEM data is not valid: {0}")]
    BadCertificate(String),
    #[error("no private key found in the PEM data (expected -----BEGIN PRIVATE KEY----- or an EC/RSA key)")]
    NoKey,
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A certificate chain and its key, ready for rustls, with what the status and the renewal need.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's DNS names (subjectAltName, else the common name).
    pub names: Vec<String>,
    /// The leaf's notAfter (Unix seconds).
    pub not_after: u64,
    /// The leaf's serial number, hex.
    pub serial: String,
}

/// Parses a PEM chain (leaf first, then intermediates) and its PEM private key; checks the key
/// belongs to the leaf.
pub fn load_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let Some(leaf) = chain.first() else { return Err(TlsError::NoCertificate) };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        e => TlsError::BadKey(e.to_string()),
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let not_after = parsed.validity().not_after.timestamp().max(0) as u64;
    let serial = parsed.tbs_certificate.raw_serial_as_string().replace(':', "");
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    let provider = provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::BadKey(e.to_string()))?;
    Ok(LoadedCert { key: Arc::new(key), names, not_after, serial })
}

/// The crypto provider OnAir's TLS uses (aws-lc-rs, as the rest of the workspace).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate served now; none yet (or none usable): handshakes are refused.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<LoadedCert>>>,
}

impl CertResolver {
    pub fn current(&self) -> Option<Arc<LoadedCert>> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Serves `cert` from the next handshake on (connections already open keep theirs).
    pub fn set(&self, cert: LoadedCert) {
        *self.current.write().expect("not poisoned") = Some(Arc::new(cert));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().map(|c| c.key.clone())
    }
}

/// A rustls server configuration over `resolver`, offering `alpn` (empty: no ALPN).
pub fn server_config(resolver: Arc<CertResolver>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

// ---------- pure decisions ----------

/// Whether a certificate expiring at `not_after` (Unix s) must be renewed at `now` (Unix s):
/// within `renew_before_days` of its expiry (or past it).
pub fn renewal_due(not_after: u64, now: u64, renew_before_days: u32) -> bool {
    now.saturating_add(u64::from(renew_before_days) * 86_400) >= not_after
}

/// How long to wait before attempt `failures + 1` after `failures` failed ones in a row:
/// 30 s, doubling, at most an hour.
pub fn retry_delay(failures: u32) -> Duration {
    let s = 30u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_secs(s.min(3600))
}

/// The ACME HTTP-01 challenge path prefix (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Where a plain-HTTP request goes when HTTPS is in use: `Some(https URL)` when the request's
/// `Host` names one of `cert_names` (a LAN address or `localhost` the certificate does not cover
/// keeps plain HTTP, so the LAN and the local tools go on working) and it is not an ACME
/// challenge; `None`: serve it as is.
pub fn redirect_location(
    path_and_query: &str,
    host_header: Option<&str>,
    cert_names: &[String],
    https_port: u16,
) -> Option<String> {
    if path_and_query.starts_with(CHALLENGE_PREFIX) {
        return None;
    }
    let host = host_header?.trim();
    let hp: crate::net::HostPort = host.parse().ok()?;
    let plain = hp.host.to_string().to_ascii_lowercase();
    if !cert_names.iter().any(|n| name_matches(n, &plain)) {
        return None;
    }
    let authority = authority(&hp.host.in_url().to_ascii_lowercase(), https_port);
    let path = if path_and_query.is_empty() { "/" } else { path_and_query };
    Some(format!("https://{authority}{path}"))
}

/// `name` (from a certificate, maybe `*.example.org`) covers `host`.
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => name == host,
    }
}

/// `host:port`, without the port when it is 443.
fn authority(host_in_url: &str, https_port: u16) -> String {
    if https_port == 443 { host_in_url.to_owned() } else { format!("{host_in_url}:{https_port}") }
}

/// `https://host[:port]` (no `:443`).
pub fn https_base(host_in_url: &str, https_port: u16) -> String {
    format!("https://{}", authority(host_in_url, https_port))
}

/// `rtmps://host[:port]/<app>` (no `:443`).
pub fn rtmps_server(host_in_url: &str, rtmps_port: u16, app: &str) -> String {
    let a = if rtmps_port == 443 { host_in_url.to_owned() } else { format!("{host_in_url}:{rtmps_port}") };
    format!("rtmps://{a}/{app}")
}

// ---------- storage ----------

/// Where automatic certificates are kept: `<data dir>/tls/cert.pem` (chain) and `key.pem`.
pub fn acme_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Writes the chain and key (the key readable by this user only on Unix), each through a
/// temporary file renamed over the old one.
pub fn store_pair(data_dir: &Path, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
    let (cert, key) = acme_paths(data_dir);
    let dir = cert.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.into(), source })?;
    write_file(&key, key_pem.as_bytes(), true)?;
    write_file(&cert, chain_pem.as_bytes(), false)
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let err = |source| TlsError::Write { path: path.into(), source };
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
}

/// The user's certificate chain and key (`mode = "file"`).
pub fn load_files(cert_file: &Path, key_file: &Path) -> Result<LoadedCert, TlsError> {
    load_pem(&read("the certificate file", cert_file)?, &read("the key file", key_file)?)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------- the HTTPS front of the HTTP server ----------

/// What the HTTP server needs to know about TLS: the certificate in use (for HTTPS handshakes
/// and the redirect decision), pending ACME challenges, HSTS.
pub struct WebTls {
    pub resolver: Arc<CertResolver>,
    pub challenges: Challenges,
    pub hsts: bool,
    pub https_port: u16,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl WebTls {
    /// The redirect for a plain-HTTP request (see [`redirect_location`]); none while no
    /// certificate is in use.
    pub fn redirect(&self, path_and_query: &str, host: Option<&str>) -> Option<String> {
        let cert = self.resolver.current()?;
        redirect_location(path_and_query, host, &cert.names, self.https_port)
    }
}

// ---------- keeping a certificate in use ----------

/// Keeps a certificate in [`CertResolver`]: loads the user's files or obtains and renews one over
/// ACME; reports through [`Control::set_https`].
pub struct CertManager {
    pub settings: TlsSettings,
    pub data_dir: PathBuf,
    pub resolver: Arc<CertResolver>,
    pub challenges: Challenges,
    pub store: Arc<dyn SecretStore>,
    pub control: Arc<Control>,
    pub https_port: u16,
    pub rtmps_port: Option<u16>,
}

impl CertManager {
    fn status(&self, state: &str, error: Option<String>) -> HttpsStatus {
        let cert = self.resolver.current();
        let domain = match self.settings.domain.trim() {
            "" => cert.as_ref().and_then(|c| c.names.first().cloned()),
            d => Some(d.to_owned()),
        };
        HttpsStatus {
            mode: self.settings.mode.as_str().into(),
            state: state.into(),
            domain,
            expires_unix_s: cert.as_ref().map(|c| c.not_after),
            error,
            https_port: Some(self.https_port),
            rtmps_port: self.rtmps_port,
        }
    }

    fn report(&self, state: &str, error: Option<String>) {
        self.control.set_https(self.status(state, error));
    }

    /// Runs until `shutdown`: the first certificate at once, then a check every
    /// `renew_check_s` (file mode: the files are read again; acme: renewed when due); after a
    /// failure, again after [`retry_delay`].
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        let mut account = acme::AccountCache::default();
        self.report("obtaining", None);
        if self.settings.mode == TlsMode::Acme {
            // A certificate kept from an earlier run is served at once, while still valid.
            let (cert, key) = acme_paths(&self.data_dir);
            if cert.exists() {
                match load_files(&cert, &key) {
                    Ok(c) if c.not_after > unix_now() => {
                        info!(expires_unix_s = c.not_after, serial = %c.serial, "HTTPS certificate from the data directory");
                        self.resolver.set(c);
                        self.report("ok", None);
                    }
                    Ok(_) => info!("the stored HTTPS certificate has expired: obtaining a new one"),
                    Err(e) => warn!("the stored HTTPS certificate cannot be used ({e}): obtaining a new one"),
                }
            }
        }
        loop {
            let result = match self.settings.mode {
                TlsMode::Off => return,
                TlsMode::File => self.load_user_files(),
                TlsMode::Acme => self.keep_acme(&mut account).await,
            };
            let wait = match result {
                Ok(()) => {
                    failures = 0;
                    self.report("ok", None);
                    Duration::from_secs(self.settings.renew_check_s)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = retry_delay(failures);
                    warn!(retry_in_s = wait.as_secs(), "HTTPS certificate problem: {e}");
                    self.report("error", Some(e));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    fn load_user_files(&self) -> Result<(), String> {
        let c = load_files(&self.settings.cert_file, &self.settings.key_file).map_err(|e| e.to_string())?;
        if c.not_after <= unix_now() {
            return Err(format!("the certificate in {} has expired", self.settings.cert_file.display()));
        }
        let changed = self.resolver.current().is_none_or(|old| old.serial != c.serial);
        if changed {
            info!(expires_unix_s = c.not_after, names = ?c.names, "HTTPS certificate from the configured files");
            self.resolver.set(c);
        }
        Ok(())
    }

    async fn keep_acme(&self, account: &mut acme::AccountCache) -> Result<(), String> {
        let now = unix_now();
        if let Some(c) = self.resolver.current()
            && !renewal_due(c.not_after, now, self.settings.renew_before_days)
        {
            return Ok(());
        }
        let renewing = self.resolver.current().is_some();
        self.report(if renewing { "renewing" } else { "obtaining" }, None);
        info!(domain = %self.settings.domain, renewing, "requesting an HTTPS certificate over ACME");
        let (chain, key) =
            acme::obtain(&self.settings, &self.store, account, &self.challenges).await.map_err(|e| e.to_string())?;
        let c = load_pem(chain.as_bytes(), key.as_bytes()).map_err(|e| format!("the CA's certificate: {e}"))?;
        store_pair(&self.data_dir, &chain, &key).map_err(|e| e.to_string())?;
        info!(expires_unix_s = c.not_after, serial = %c.serial, "HTTPS certificate obtained");
        self.resolver.set(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_within_the_window() {
        let day = 86_400;
        let not_after = 1_000 * day;
        assert!(!renewal_due(not_after, 900 * day, 30));
        assert!(!renewal_due(not_after, 970 * day - 1, 30));
        assert!(renewal_due(not_after, 970 * day, 30));
        assert!(renewal_due(not_after, 2_000 * day, 30), "expired");
        assert!(renewal_due(not_after, 0, 1_000), "a window longer than the validity");
        assert!(!renewal_due(not_after, 0, 0));
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(3), Duration::from_secs(120));
        assert_eq!(retry_delay(8), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
        assert_eq!(retry_delay(0), Duration::from_secs(30));
    }

    #[test]
    fn plain_http_redirects_only_for_the_certificate_names() {
        let names = vec!["tv.example.org".to_string()];
        assert_eq!(
            redirect_location("/show?x=1", Some("tv.example.org:8080"), &names, 8443).as_deref(),
            Some("https://tv.example.org:8443/show?x=1")
        );
        assert_eq!(
            redirect_location("/", Some("TV.example.org"), &names, 443).as_deref(),
            Some("https://tv.example.org/")
        );
        assert_eq!(redirect_location("/.well-known/acme-challenge/abc", Some("tv.example.org"), &names, 443), None);
        assert_eq!(redirect_location("/show", Some("192.168.1.20:8080"), &names, 443), None, "LAN address");
        assert_eq!(redirect_location("/show", Some("127.0.0.1:8080"), &names, 443), None, "local tools");
        assert_eq!(redirect_location("/show", None, &names, 443), None);
        assert_eq!(redirect_location("/show", Some("bad host/"), &names, 443), None);
        let wild = vec!["*.example.org".to_string()];
        assert!(redirect_location("/", Some("a.example.org"), &wild, 443).is_some());
        assert!(redirect_location("/", Some("a.b.example.org"), &wild, 443).is_none());
        let ip = vec!["192.168.1.20".to_string()];
        assert_eq!(
            redirect_location("/s", Some("192.168.1.20:8080"), &ip, 8443).as_deref(),
            Some("https://192.168.1.20:8443/s"),
            "a certificate for the address itself"
        );
    }

    #[test]
    fn https_links_omit_443() {
        assert_eq!(https_base("tv.example.org", 443), "https://tv.example.org");
        assert_eq!(https_base("tv.example.org", 8443), "https://tv.example.org:8443");
        assert_eq!(rtmps_server("tv.example.org", 443, "live"), "rtmps://tv.example.org/live");
        assert_eq!(rtmps_server("[::1]", 1936, "live"), "rtmps://[::1]:1936/live");
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_pairs_load_and_mismatches_are_explained() {
        let (cert, key) = self_signed(&["tv.example.org", "127.0.0.1"]);
        let c = load_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(c.names, ["tv.example.org", "127.0.0.1"]);
        assert!(c.not_after > unix_now());
        assert!(!c.serial.is_empty());
        let (_, other_key) = self_signed(&["x"]);
        let e = load_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("private key"), "{e}");
        assert!(matches!(load_pem(b"", key.as_bytes()), Err(TlsError::NoCertificate)));
        assert!(matches!(load_pem(cert.as_bytes(), b"nothing"), Err(TlsError::NoKey)));
    }

    #[test]
    fn stored_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("onair-tls-test-{}", std::process::id()));
        let (cert, key) = self_signed(&["tv.example.org"]);
        store_pair(&dir, &cert, &key).unwrap();
        let (c, k) = acme_paths(&dir);
        assert!(load_files(&c, &k).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        }
        store_pair(&dir, &cert, &key).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_resolver_swaps_certificates() {
        let r = CertResolver::default();
        assert!(r.current().is_none());
        let (cert, key) = self_signed(&["a.example.org"]);
        r.set(load_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        let first = r.current().unwrap().serial.clone();
        let (cert, key) = self_signed(&["a.example.org"]);
        r.set(load_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        assert_ne!(r.current().unwrap().serial, first);
        let _ = server_config(Arc::new(r), &[b"http/1.1"]);
    }
}
