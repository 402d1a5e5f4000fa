//! The accept loop of every Databelt HTTP server (host API, peer and step
//! protocols, placement service), with the limits a hostile network calls
//! for: a cap on open connections (one over it is closed at once), a timeout
//! for reading each request's headers — which also closes a keep-alive
//! connection left idle that long, so slow-header (slowloris) and idle
//! connections cannot pile up — and a bounded graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::auth::{ConnectionIdentity, ServerSecurity};

/// Connection limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request's headers, and longest a
    /// keep-alive connection may stay idle between requests.
    pub header_read_timeout: Duration,
    /// Most connections open at once; one more is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// Longest shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    /// The limits a host's configuration sets.
    pub fn of(config: &databelt_host::HostConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections as usize,
            ..ConnectionLimits::default()
        }
    }
}

/// Serve `router` on `listener` (HTTP/1.1) until `shutdown` resolves, then
/// wait up to `limits.shutdown_grace` for the requests in flight.
///
/// With `security.tls`, every connection is TLS: the handshake must finish
/// within the header-read timeout, and the member identity of a verified
/// client certificate is handed to every request of the connection
/// ([`ConnectionIdentity`]). `security.access` then decides, before any
/// handler runs, whether each request's caller may make it
/// ([`crate::auth::authorize`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(security.access.clone(), crate::auth::authorize));
    let tls = security.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never exit.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many open connections; closed this one");
            drop(stream);
            continue;
        };
        let router = router.clone();
        let watcher = graceful.watcher();
        let Some(acceptor) = &tls else {
            tokio::spawn(async move {
                if let Err(e) = run_connection(stream, router, ConnectionIdentity(None), limits, watcher).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                drop(permit);
            });
            continue;
        };
        let handshake = acceptor.accept(stream);
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::identity_of(cert));
            if let Err(e) = run_connection(stream, router, ConnectionIdentity(identity), limits, watcher).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("shutdown: requests still in flight were cut"),
    }
    Ok(())
}

/// One HTTP/1.1 connection over `io`, every request tagged with
/// `identity`, shut down gracefully with the server.
async fn run_connection<IO>(
    io: IO,
    router: Router,
    identity: ConnectionIdentity,
    limits: ConnectionLimits,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(identity.clone());
        request
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    watcher.watch(http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service))).await
}
