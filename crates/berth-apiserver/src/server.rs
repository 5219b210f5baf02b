//! Serving a router on an already bound listener until a shutdown future resolves
//! (STYLE §6.3), and the signal handling of the binary.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a client may take to send a request's headers.
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` over HTTPS on `listener` until `shutdown` resolves, then drains open
/// connections for at most `shutdown_timeout`.
///
/// # Errors
/// The listener cannot be handed to the server, or the server fails.
pub async fn serve_https(
    listener: TcpListener,
    app: Router,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let std_listener = listener
        .into_std()
        .context("failed to take over the listener")?;
    let handle = axum_server::Handle::new();
    let mut server = axum_server::from_tcp_rustls(std_listener, tls)
        .context("failed to start the https server")?
        // TCP_NODELAY: small writes (watch events, short answers) leave at once instead of
        // waiting on Nagle's algorithm for the peer's delayed ACK (~40 ms).
        .map(|a| a.acceptor(axum_server::accept::NoDelayAcceptor::new()))
        .handle(handle.clone());
    // A client gets READ_HEADER_TIMEOUT to send its request headers (reference §1.1).
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_HEADER_TIMEOUT);
    let server = server.serve(app.into_make_service());
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => return r.context("https server failed"),
        () = shutdown => {}
    }
    handle.graceful_shutdown(Some(shutdown_timeout));
    // The handle's notification reaches only a server already waiting on it; repeat until the
    // server returns, and give up a little after the drain bound.
    let deadline = tokio::time::Instant::now() + shutdown_timeout + Duration::from_secs(1);
    loop {
        tokio::select! {
            r = &mut server => return r.context("https server failed"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if tokio::time::Instant::now() >= deadline {
                    handle.shutdown();
                    tracing::warn!("shutdown timeout reached; closing remaining connections");
                    return Ok(());
                }
                handle.graceful_shutdown(Some(shutdown_timeout));
            }
        }
    }
}

/// Serves `app` over plain HTTP (the metrics port) until `shutdown` resolves; gives open
/// connections at most `shutdown_timeout`.
///
/// # Errors
/// The server fails.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let mut stop = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let mut timer = shutdown;
    let bound = async move {
        let _ = timer.wait_for(|s| *s).await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    tokio::select! {
        r = server => r.context("metrics server failed"),
        () = bound => Ok(()),
    }
}

/// Resolves when the receiver turns true (or its sender is gone).
pub async fn wait_shutdown(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// # Errors
/// The signal handlers cannot be installed.
pub async fn termination_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
