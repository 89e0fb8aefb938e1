//! A real ACME CA for the tests: Debian's `pebble` (Let's Encrypt's test CA) with
//! `pebble-challtestsrv` as its DNS, answering 127.0.0.1 for every name, all on loopback with
//! ports picked free per instance (tests run in parallel). Pebble's own HTTPS uses a TLS CA made
//! here with `openssl` ([`Pebble::tls_ca`], what the ACME client must trust); its issuing root
//! is another one, regenerated at every start ([`Pebble::issuing_root`]). Processes are killed
//! when the [`Pebble`] is dropped.
//!
//! Recipe and pitfalls: ../shared/design/netns-and-acme-recipes.md (section 2).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::{fresh_dir, require_tool};

/// A free TCP (and UDP) port on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Runs a shell command line; fails with its output.
pub async fn sh(script: &str) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .context("shell command timed out")??;
    if !out.status.success() {
        bail!("`{script}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A CA made with openssl and a leaf it signs: `ca.pem`, `<name>.pem` (leaf + CA chain is not
/// needed: the CA is the root), `<name>.key`, for the names in `sans` (`DNS:localhost,IP:127.0.0.1`).
pub async fn make_ca_and_leaf(
    dir: &Path,
    ca_name: &str,
    leaf: &str,
    sans: &str,
) -> Result<(PathBuf, PathBuf, PathBuf)> {
    require_tool("openssl");
    let d = dir.display();
    let ca = dir.join(format!("{ca_name}.pem"));
    if !ca.exists() {
        sh(&format!(
            "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
             -subj '/CN=onair test {ca_name}' -keyout {ca_name}.key -out {ca_name}.pem 2>&1"
        ))
        .await?;
    }
    sh(&format!(
        "cd {d} && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN={leaf}' \
         -keyout {leaf}.key -out {leaf}.csr 2>&1 && \
         printf 'subjectAltName={sans}\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > {leaf}.ext && \
         openssl x509 -req -in {leaf}.csr -CA {ca_name}.pem -CAkey {ca_name}.key -CAcreateserial -days 30 \
         -extfile {leaf}.ext -out {leaf}.pem 2>&1"
    ))
    .await?;
    Ok((ca, dir.join(format!("{leaf}.pem")), dir.join(format!("{leaf}.key"))))
}

/// pebble + pebble-challtestsrv.
pub struct Pebble {
    pub dir: PathBuf,
    pub acme_port: u16,
    pub management_port: u16,
    pub dns_port: u16,
    /// The CA pebble's own HTTPS certificate comes from (trust it for the directory).
    pub tls_ca: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    /// Prepares (does not start) a CA that validates HTTP-01 on 127.0.0.1:`http_port`.
    pub async fn prepare(http_port: u16) -> Pebble {
        require_tool("pebble");
        require_tool("pebble-challtestsrv");
        let dir = fresh_dir("pebble");
        let (tls_ca, cert, key) =
            make_ca_and_leaf(&dir, "tls-ca", "pebble", "DNS:localhost,IP:127.0.0.1").await.expect("pebble TLS cert");
        let (acme_port, management_port, dns_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble-config.json"), config.to_string()).unwrap();
        Pebble { dir, acme_port, management_port, dns_port, tls_ca, children: Vec::new() }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// Starts the DNS and the CA; returns once the directory answers.
    pub async fn start(&mut self) {
        let log = |name: &str| std::fs::File::create(self.dir.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .kill_on_drop(true)
            .spawn()
            .expect("pebble-challtestsrv starts");
        self.children.push(dns);
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble-config.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .kill_on_drop(true)
            .spawn()
            .expect("pebble starts");
        self.children.push(ca);
        let check = format!("curl -fsS -m 1 --cacert {} {} -o /dev/null", self.tls_ca.display(), self.directory());
        for _ in 0..80 {
            if sh(&check).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("pebble did not answer at {}: {}", self.directory(), self.logs());
    }

    /// Fetches the issuing root of this run of pebble into a file.
    pub async fn issuing_root(&self) -> PathBuf {
        let path = self.dir.join("pebble-root.pem");
        sh(&format!(
            "curl -fsS -m 5 --cacert {} https://127.0.0.1:{}/roots/0 -o {}",
            self.tls_ca.display(),
            self.management_port,
            path.display()
        ))
        .await
        .expect("pebble's root");
        path
    }

    /// What pebble logged.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!("{}{}{}", read("pebble.log"), read("pebble.err"), read("challtestsrv.err"))
    }

    /// Stops both processes.
    pub async fn stop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill().await;
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

/// The certificate `host:port` serves for SNI `name`: `(serial, subject and issuer text)`.
pub async fn served_certificate(port: u16, name: &str) -> Result<(String, String)> {
    let out = sh(&format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -noout -serial -subject -issuer"
    ))
    .await?;
    let serial = out
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .context("no serial in the served certificate")?
        .to_ascii_lowercase();
    Ok((serial, out))
}

/// `curl` over HTTPS to `name:port` resolved to 127.0.0.1, trusting `root`: (HTTP status, body).
pub async fn curl_https(root: &Path, name: &str, port: u16, path: &str, headers: &[&str]) -> Result<(u16, String)> {
    let mut h = String::new();
    for header in headers {
        h.push_str(&format!(" -H '{header}'"));
    }
    let out = sh(&format!(
        "curl -sS -m 10 --cacert {} --resolve {name}:{port}:127.0.0.1{h} -w '\\n%{{http_code}}' https://{name}:{port}{path}",
        root.display()
    ))
    .await?;
    let (body, code) = out.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse()?, body.to_owned()))
}
