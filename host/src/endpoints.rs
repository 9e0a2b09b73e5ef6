//! The HTTP endpoints of `hw-agent run`: `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for the DaemonSet's probes. Plain HTTP, as
//! node_exporter and the kubelet's probes use; nothing secret is served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::metrics::{self, Metrics};

/// A client gets this long to send its request headers, so idle or slow
/// connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The state the endpoints serve.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub metrics: Arc<Metrics>,
    /// True once this node's report is published, false again while the
    /// agent stops.
    pub ready: Arc<AtomicBool>,
}

/// Serves the endpoints on `listener` until `shutdown` becomes true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: EndpointState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.context("failed to accept a connection on the metrics and health listener")?,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(&state, request.method(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "metrics or health connection ended with an error");
            }
        });
    }
}

fn respond(state: &EndpointState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: this node's report is not published yet, or the agent is stopping\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> EndpointState {
        EndpointState { metrics: Arc::new(Metrics::new()), ready: Arc::new(AtomicBool::new(ready)) }
    }

    #[test]
    fn readiness_follows_the_flag() {
        assert_eq!(respond(&state(false), &Method::GET, "/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(respond(&state(true), &Method::GET, "/readyz").status(), StatusCode::OK);
        assert_eq!(respond(&state(false), &Method::GET, "/healthz").status(), StatusCode::OK);
    }

    #[test]
    fn metrics_are_openmetrics_text() {
        let response = respond(&state(true), &Method::GET, "/metrics");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        assert_eq!(respond(&state(true), &Method::GET, "/").status(), StatusCode::NOT_FOUND);
        let post = respond(&state(true), &Method::POST, "/metrics");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }
}
