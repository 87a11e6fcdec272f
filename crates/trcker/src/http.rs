//! The HTTP server under every listener: poem's endpoints on hyper's
//! HTTP/1.1 and HTTP/2 connections, with the timeouts a public listener
//! needs. A client that opens connections and then sends nothing, or sends
//! its headers a byte at a time, holds a connection (a task, a socket and
//! its buffers) for at most [`HEADER_READ_TIMEOUT`]; one that stalls in the
//! middle of a body or stops reading its answer, for at most
//! [`IDLE_TIMEOUT`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::error::ReadBodyError;
use poem::http::StatusCode;
use poem::http::header::{self, HeaderValue};
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long a request's headers may take to arrive, counted from when the
/// connection is ready for them: also how long a kept-alive connection
/// may wait idle for its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection may go without a byte read or written (a stalled
/// body upload, an answer nobody reads) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long requests in flight may finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type App = Arc<BoxEndpoint<'static, Response>>;

/// Serves `app` on `acceptor` until `shutdown`, finishing requests in flight.
pub fn serve(
    mut acceptor: impl Acceptor + 'static,
    app: impl Endpoint + 'static,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let app: App = Arc::new(app.map_to_response().boxed());
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = acceptor.accept() => match accepted {
                    Ok((io, local, remote, scheme)) => {
                        let conn = Conn { local, remote, scheme, app: app.clone() };
                        connections.spawn(conn.run(io, shutdown.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors, say: let some close.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the shutdown grace; closing them"
            );
        }
    })
}

/// One accepted connection.
struct Conn {
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: poem::http::uri::Scheme,
    app: App,
}

impl Conn {
    async fn run<Io>(self, io: Io, shutdown: CancellationToken)
    where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Conn {
            local,
            remote,
            scheme,
            app,
        } = self;
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            let req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            async move {
                let resp: hyper::Response<_> = app.get_response(req).await.into();
                Ok::<_, Infallible>(resp)
            }
        });
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let io = Activity {
            inner: io,
            started,
            last: last.clone(),
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let idle = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    if idle > IDLE_TIMEOUT.as_millis() as u64 {
                        tracing::debug!("closing an idle connection");
                        return;
                    }
                }
            }
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// A connection's socket that notes when a byte last went either way.
struct Activity<Io> {
    inner: Io,
    started: Instant,
    /// Milliseconds after `started`.
    last: Arc<AtomicU64>,
}

impl<Io> Activity<Io> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Activity<Io> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Activity<Io> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a request's body may take to arrive once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How a route answers a body it will not take: the status (413 or 408)
/// and what to say.
pub type Refusal = fn(StatusCode, String) -> Response;

/// Reads a request's body, at most `max` bytes within
/// [`BODY_READ_TIMEOUT`], before the route sees it: a larger body is
/// refused with 413 as soon as its size is known (from `Content-Length`,
/// else once `max` bytes came), without reading the rest, so that no
/// request can make the process hold more than `max` bytes of it.
pub struct BodyLimit {
    pub max: usize,
    pub refuse: Refusal,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimited<E>;

    fn transform(&self, ep: E) -> Self::Output {
        BodyLimited {
            ep,
            max: self.max,
            refuse: self.refuse,
        }
    }
}

pub struct BodyLimited<E> {
    ep: E,
    max: usize,
    refuse: Refusal,
}

impl<E: Endpoint> Endpoint for BodyLimited<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let too_large = || {
            let mut resp = (self.refuse)(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request's body may be at most {} bytes here", self.max),
            );
            // The unread rest stays on the connection: close it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max as u64) {
            return Ok(too_large());
        }
        let body = req.take_body();
        let bytes =
            match tokio::time::timeout(BODY_READ_TIMEOUT, body.into_bytes_limit(self.max)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(ReadBodyError::PayloadTooLarge)) => return Ok(too_large()),
                Ok(Err(e)) => {
                    return Ok((self.refuse)(
                        StatusCode::BAD_REQUEST,
                        format!("the request's body could not be read: {e}"),
                    ));
                }
                Err(_) => {
                    let mut resp = (self.refuse)(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request's body did not arrive within {} seconds",
                            BODY_READ_TIMEOUT.as_secs()
                        ),
                    );
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok(resp);
                }
            };
        req.set_body(bytes);
        self.ep.call(req).await.map(IntoResponse::into_response)
    }
}
