//! The HTTP server: an accept loop over hyper's HTTP/1.1 connections that bounds what clients can
//! make it hold (`[limits]` `http_*`), in front of the [`crate::http::router`] app.
//!
//! - **Connections**: at most `http_connections` open. Over the cap a connection is answered a
//!   fixed `503` with `Retry-After` (written once, without waiting) and closed at once: no task, no
//!   buffer.
//! - **Header timeout** (slowloris): a new connection's first byte must arrive within
//!   `http_header_timeout_s`, and a request's headers within `http_header_timeout_s` of the
//!   connection waiting for them — which is also how long an idle keep-alive connection stays
//!   open between requests. Players that keep a connection busy
//!   (LL-HLS reloads every part) keep it. A head over 64 KiB is answered `431`.
//! - **Body timeout**: a request's body must arrive within `http_body_timeout_s` of its headers,
//!   else `408` and the connection is closed.
//! - **In flight**: at most `http_in_flight` requests being answered at once (held blocking
//!   reloads included); over it, `503` with `Retry-After`.
//!
//! Every refusal is counted in [`Refusals`] and logged in one line ([`Refusals::refuse`] keeps a
//! flood to one `info` line per reason per period). Handlers see the client's address as
//! `ConnectInfo<SocketAddr>`, as with `axum::serve`. On shutdown the server stops accepting, idle
//! connections close and busy ones finish their current request.
//!
//! **HTTPS** ([`HttpServer::serve_https`]) is the same server behind a TLS handshake
//! ([`crate::tls::WebTls`]): the connection cap counts TLS connections too, and the handshake must
//! be done within the header timeout of the connection's start. With TLS configured, plain HTTP
//! answers ACME HTTP-01 challenges and, once a certificate is in use, redirects (308) requests for
//! the certificate's names to HTTPS ([`crate::tls::redirect_location`]); HTTPS responses carry
//! `Strict-Transport-Security` when `[tls] hsts` is on.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::LimitsSettings;
use crate::limits::{Refusal, Refusals};
use crate::tls::{CHALLENGE_PREFIX, WebTls};

/// A connection's read buffer at most (hyper's default is ~400 KiB): a request head larger than
/// this is answered `431`. Real heads are a few hundred bytes; this bounds what a slow client
/// sending huge headers can make each connection hold.
const MAX_BUFFER: usize = 64 * 1024;

/// The HTTP server's limits and what they hold now.
pub struct HttpServer {
    max_connections: usize,
    connections: Arc<Semaphore>,
    max_in_flight: usize,
    in_flight: Arc<Semaphore>,
    header_timeout: Duration,
    body_timeout: Duration,
    retry_after_s: u64,
    refusals: Arc<Refusals>,
    /// The whole answer to a connection over the cap.
    full: Vec<u8>,
    /// HTTPS, ACME challenges and redirects; None: TLS off.
    tls: Option<Arc<WebTls>>,
}

impl HttpServer {
    pub fn new(limits: &LimitsSettings, refusals: Arc<Refusals>) -> Arc<HttpServer> {
        Self::new_with_tls(limits, refusals, None)
    }

    /// A server that also answers HTTPS ([`HttpServer::serve_https`]) with `tls`.
    pub fn new_with_tls(limits: &LimitsSettings, refusals: Arc<Refusals>, tls: Option<Arc<WebTls>>) -> Arc<HttpServer> {
        let reason = Refusal::HttpConnections.reason();
        let full = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n{reason}\n",
            limits.retry_after_s,
            reason.len() + 1,
        );
        Arc::new(HttpServer {
            max_connections: limits.http_connections,
            connections: Arc::new(Semaphore::new(limits.http_connections)),
            max_in_flight: limits.http_in_flight,
            in_flight: Arc::new(Semaphore::new(limits.http_in_flight)),
            header_timeout: Duration::from_secs(limits.http_header_timeout_s),
            body_timeout: Duration::from_secs(limits.http_body_timeout_s),
            retry_after_s: limits.retry_after_s,
            refusals,
            full: full.into_bytes(),
            tls,
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    /// Serves `app` on `listener` until `shutdown` turns true (or its sender goes), then waits
    /// for the open connections to finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, app: Router, shutdown: watch::Receiver<bool>) {
        self.serve_on(listener, app, shutdown, false).await
    }

    /// [`HttpServer::serve`] over TLS (the server must have been made with TLS settings). The
    /// connection cap is shared with plain HTTP.
    pub async fn serve_https(self: Arc<Self>, listener: TcpListener, app: Router, shutdown: watch::Receiver<bool>) {
        assert!(self.tls.is_some(), "serve_https needs a server made with new_with_tls");
        self.serve_on(listener, app, shutdown, true).await
    }

    async fn serve_on(
        self: Arc<Self>,
        listener: TcpListener,
        app: Router,
        mut shutdown: watch::Receiver<bool>,
        https: bool,
    ) {
        loop {
            let (socket, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, typically: let connections close first.
                        warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            match self.connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(self.clone().connection(socket, remote, permit, app.clone(), shutdown.clone(), https));
                }
                // A TLS client could not read a plain answer: just closed.
                Err(_) if https => self.refuse(Refusal::HttpConnections, remote),
                Err(_) => self.refuse_connection(socket, remote),
            }
        }
        drop(listener);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = self.connections.acquire_many(all).await;
    }

    /// Over the connection cap: whatever the client sent already is read (so the close is not a
    /// reset that could destroy the answer), the fixed 503 written if the socket takes it at once,
    /// and the connection closed. Nothing waits.
    fn refuse_connection(&self, socket: TcpStream, remote: SocketAddr) {
        self.refuse(Refusal::HttpConnections, remote);
        let Ok(mut socket) = socket.into_std() else { return };
        let mut scratch = [0u8; 4096];
        let _ = socket.read(&mut scratch);
        let _ = socket.write(&self.full);
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }

    fn refuse(&self, why: Refusal, remote: SocketAddr) {
        match self.refusals.refuse(why, std::time::Instant::now()) {
            Some(n) => info!(%remote, refused = n, "HTTP client refused: {}", why.reason()),
            None => debug!(%remote, "HTTP client refused: {}", why.reason()),
        }
    }

    async fn connection(
        self: Arc<Self>,
        socket: TcpStream,
        remote: SocketAddr,
        _permit: OwnedSemaphorePermit,
        app: Router,
        mut shutdown: watch::Receiver<bool>,
        https: bool,
    ) {
        socket.set_nodelay(true).ok();
        let start = tokio::time::Instant::now();
        // hyper's header timer starts with the first byte of a head: a connection that sends
        // nothing at all is cut off here, after the same time.
        tokio::select! {
            first = tokio::time::timeout(self.header_timeout, socket.readable()) => if first.is_err() {
                self.refuse(Refusal::HttpTimeout, remote);
                return;
            },
            _ = stopped(&mut shutdown) => return,
        }
        if !https {
            return self.drive(socket, remote, app, shutdown, false).await;
        }
        // The TLS handshake, within the header timeout of the connection's start.
        let acceptor = self.tls.as_ref().expect("checked in serve_https").acceptor.clone();
        let handshake = tokio::time::timeout_at(start + self.header_timeout, acceptor.accept(socket));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.refuse(Refusal::HttpTimeout, remote);
                    return;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        self.drive(stream, remote, app, shutdown, true).await
    }

    /// Serves HTTP/1.1 requests on an open connection (plain or TLS) until it closes.
    async fn drive<S>(
        self: Arc<Self>,
        socket: S,
        remote: SocketAddr,
        app: Router,
        mut shutdown: watch::Receiver<bool>,
        https: bool,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Whether a request's headers arrived at all: a header timeout before the first one is a
        // refused client (slowloris, or a connection left idle); after it, an idle keep-alive
        // connection closing normally.
        let requested = Arc::new(AtomicBool::new(false));
        let service = {
            let server = self.clone();
            let requested = requested.clone();
            hyper::service::service_fn(move |req| {
                requested.store(true, Ordering::Relaxed);
                server.clone().request(req, remote, app.clone(), https)
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_BUFFER)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(socket), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        match result {
            Err(e) if e.is_timeout() && !requested.load(Ordering::Relaxed) => self.refuse(Refusal::HttpTimeout, remote),
            Err(e) if e.is_timeout() => debug!(%remote, "idle HTTP connection closed"),
            Err(e) => debug!(%remote, error = %e, "HTTP connection ended with an error"),
            Ok(()) => {}
        }
    }

    async fn request(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        app: Router,
        https: bool,
    ) -> Result<Response<Body>, Infallible> {
        if let Some(tls) = &self.tls {
            if let Some(res) = tls_front(tls, &req, https) {
                return Ok(res);
            }
            if https && tls.hsts {
                let mut res = self.answer(req, remote, app).await?;
                res.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
                return Ok(res);
            }
        }
        self.answer(req, remote, app).await
    }

    async fn answer(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        app: Router,
    ) -> Result<Response<Body>, Infallible> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.refuse(Refusal::HttpInFlight, remote);
            return Ok(busy(self.retry_after_s, Refusal::HttpInFlight.reason()));
        };
        let late = Arc::new(AtomicBool::new(false));
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let mut req = req.map(|body| Body::new(Deadline { body, deadline, sleep: None, late: late.clone() }));
        req.extensions_mut().insert(ConnectInfo(remote));
        let res = app.oneshot(req).await.unwrap_or_else(|never| match never {});
        drop(permit);
        if late.load(Ordering::Relaxed) {
            self.refuse(Refusal::HttpTimeout, remote);
            let mut res = (StatusCode::REQUEST_TIMEOUT, format!("{}\n", Refusal::HttpTimeout.reason())).into_response();
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            return Ok(res);
        }
        Ok(res)
    }
}

/// `Strict-Transport-Security` when `[tls] hsts` is on: a year.
const HSTS: &str = "max-age=31536000";

/// What TLS settles before the app sees a request: an ACME HTTP-01 challenge's answer, or (plain
/// HTTP, a certificate in use) the redirect to HTTPS.
fn tls_front(tls: &WebTls, req: &Request<Incoming>, https: bool) -> Option<Response<Body>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        return Some(match tls.challenges.get(token) {
            Some(answer) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
            }
            None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
        });
    }
    if https {
        return None;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = tls.redirect(path_and_query, host)?;
    let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).ok()?);
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    Some(res)
}

/// Until `shutdown` turns true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `503 Service Unavailable` with `Retry-After` and the reason: the answer when the server (or a
/// client's share of it) is full. CORS-open, so a player on another site sees the status (hls.js
/// retries a 5xx, not a failed CORS check).
pub fn busy(retry_after_s: u64, reason: &str) -> Response<Body> {
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response();
    let h = res.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

/// A request body that must be complete by `deadline`; past it, an error (and `late` set). The
/// timer is only made once the body is polled and not ready, so bodiless requests cost none.
struct Deadline {
    body: Incoming,
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    late: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
