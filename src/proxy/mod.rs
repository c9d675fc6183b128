//! The front proxy: a Pingora [`ProxyHttp`] that routes each request to a pool and
//! balances it over that pool's ready workers.
//!
//! - [`front`] guards every client connection (request-head deadline and size)
//!   below Pingora's parser; the hooks here check framing and body size, pick a
//!   worker ([`upstreams`], [`selection`]), retry, eject outliers ([`eject`]), set
//!   `X-Forwarded-*` and `X-Request-Id` ([`headers`]), and record metrics and the
//!   access log ([`access_log`]) once per request.
//! - A request that matches no route gets 404; a pool with no ready worker gets 503.
//! - A connect failure is retried on a worker not yet tried, for any method. A
//!   connection the worker reset or closed before its answer reached the client is
//!   retried for idempotent methods. A response in `retry_on` (or a response-head
//!   timeout with `timeout` in it) is retried only for idempotent methods and only
//!   while nothing has been sent to the client. At most `retries` extra attempts.
//! - Every request holds an [`InFlight`] guard, so shutdown can wait for the proxy to
//!   drain.
//!
//! Per-request work avoids locks and label lookups: metric handles are resolved when
//! the proxy is built, worker state is atomics, and selection does not allocate.

pub mod access_log;
pub mod address;
pub mod eject;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod front;
pub mod headers;
pub mod inflight;
pub mod router;
pub mod runtime;
pub mod selection;
pub mod upstreams;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use prometheus::{IntCounter, IntGauge};

use crate::config::{HashKey, RetryOn};
use crate::metrics::PoolRequestMetrics;
pub use address::WorkerAddr;
pub use inflight::{InFlight, InFlightGuard};
pub use router::Router;
use upstreams::PoolUpstreams;

/// One pool as the proxy uses it.
pub struct ProxyPool {
    pub name: Arc<str>,
    pub upstreams: Arc<PoolUpstreams>,
    pub metrics: PoolRequestMetrics,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub hash: Option<HashKey>,
}

/// Limits on what clients may send and how long they may stall.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Each read of a request body, each write of a response.
    pub io_timeout: Duration,
    /// Keep-alive idle time between requests, in whole seconds (at least 1).
    pub idle_secs: u64,
    pub max_header_size: usize,
    pub max_body: u64,
}

pub struct ForkyardProxy {
    pub pools: Vec<ProxyPool>,
    /// Swapped whole by a reload that changes `routes`.
    pub router: Arc<arc_swap::ArcSwap<Router>>,
    pub inflight: Arc<InFlight>,
    pub unrouted: IntCounter,
    pub limits: ClientLimits,
    pub access_log: Option<access_log::AccessLog>,
}

/// The attempt in progress: its slot, and the slot's in-flight gauge, which the
/// lease holds up by one until it is dropped (on any path).
struct Lease {
    slot: usize,
    gauge: IntGauge,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

pub struct RequestCtx {
    _inflight: InFlightGuard,
    start: Instant,
    pool: Option<usize>,
    current: Option<Lease>,
    /// Slots of earlier attempts (the current one is in `current`).
    tried: Vec<usize>,
    attempts: u32,
    hash_key: Option<u64>,
    /// `upstream_response_filter` turned a response into a retry.
    retry_response: bool,
    body_bytes: u64,
    /// Generated here, when the client sent none.
    request_id: Option<HeaderValue>,
    last_worker: Option<usize>,
}

impl ForkyardProxy {
    fn pool(&self, ctx: &RequestCtx) -> Option<&ProxyPool> {
        ctx.pool.and_then(|i| self.pools.get(i))
    }
}

/// Whether a response-side failure may be retried on another worker.
fn may_retry(session: &Session, ctx: &RequestCtx, pool: &ProxyPool) -> bool {
    ctx.attempts <= pool.retries
        && session.req_header().method.is_idempotent()
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && pool.upstreams.ready_count() > ctx.tried.len() + 1
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for ForkyardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.inflight.enter(),
            start: Instant::now(),
            pool: None,
            current: None,
            tried: Vec::new(),
            attempts: 0,
            hash_key: None,
            retry_response: false,
            body_bytes: 0,
            request_id: None,
            last_worker: None,
        }
    }

    /// No response compression (Pingora adds a disabled compression module by
    /// default; it still costs work per response).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let _ = front::with_conn(|c| c.head_done());
        let limits = self.limits;
        session.set_read_timeout(Some(limits.io_timeout));
        session.set_write_timeout(Some(limits.io_timeout));
        if session
            .get_keepalive()
            .is_some_and(|k| k != limits.idle_secs)
        {
            session.set_keepalive(Some(limits.idle_secs));
        }
        let downstream = session.as_downstream();
        let raw = || downstream.to_h1_raw();
        if let Some(why) = headers::framing_error(session.req_header(), raw)
            .or_else(|| headers::target_error(session.req_header()))
        {
            return Error::e_explain(ErrorType::HTTPStatus(400), why);
        }
        if session.as_downstream().to_h1_raw().len() > limits.max_header_size {
            return Error::e_explain(ErrorType::HTTPStatus(431), "request head too large");
        }
        let too_long = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > limits.max_body);
        if too_long {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than max_body",
            );
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        #[cfg(feature = "fault-injection")]
        fault::maybe_panic(req);
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let Some(idx) = self.router.load().route(host, req.uri.path()) else {
            self.unrouted.inc();
            respond_text(session, 404, "forkyard: no route matches this request\n").await?;
            return Ok(true);
        };
        let Some(pool) = self.pools.get(idx) else {
            // The router is built over `pools`; this is a bug, answered, not a panic.
            respond_text(session, 500, "forkyard: route to a missing pool\n").await?;
            return Ok(true);
        };
        ctx.pool = Some(idx);
        if pool.upstreams.ready_count() == 0 {
            respond_text(session, 503, "forkyard: no ready worker in this pool\n").await?;
            return Ok(true);
        }
        if let Some(key) = &pool.hash {
            ctx.hash_key = headers::hash_key(req, key, client_ip(session));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.limits.max_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body larger than max_body",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .and_then(|i| self.pools.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no pool"))?;
        if let Some(prev) = ctx.current.take() {
            ctx.tried.push(prev.slot);
        }
        let Some(slot) = pool.upstreams.select(&ctx.tried, ctx.hash_key) else {
            let (code, why) = if ctx.attempts == 0 {
                (503, "no ready worker")
            } else {
                (502, "no other worker left to try")
            };
            return Error::e_explain(ErrorType::HTTPStatus(code), why);
        };
        if ctx.attempts > 0 {
            pool.metrics.retries.inc();
        }
        ctx.attempts += 1;
        ctx.last_worker = Some(slot);
        let s = pool.upstreams.slot(slot);
        s.in_flight.inc();
        s.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.current = Some(Lease {
            slot,
            gauge: s.in_flight.clone(),
        });
        Ok(s.peer())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = self.pool(ctx) {
            pool.metrics.connect_errors.inc();
            if let Some(l) = &ctx.current {
                pool.upstreams.record(l.slot, true);
            }
            // Nothing reached the worker, so any method may go to another one.
            e.set_retry(ctx.attempts <= pool.retries);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
        headers::set_forwarded(upstream, client_ip(session), host, |ip| {
            front::with_conn(|c| {
                c.forwarded_for
                    .get_or_init(|| headers::ip_value(ip))
                    .clone()
            })
            .unwrap_or_else(|| headers::ip_value(ip))
        })?;
        if !upstream.headers.contains_key(headers::X_REQUEST_ID) {
            let id = ctx
                .request_id
                .get_or_insert_with(headers::new_request_id)
                .clone();
            upstream.insert_header(headers::X_REQUEST_ID, id)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        if let (Some(pool), Some(l)) = (self.pool(ctx), &ctx.current) {
            pool.upstreams.record(l.slot, status >= 500);
            if pool.retry_on.status(status) && may_retry(session, ctx, pool) {
                ctx.retry_response = true;
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    "retrying on another worker",
                );
            }
        }
        headers::strip_hop_by_hop(resp);
        Ok(())
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_response) {
            e.set_retry(true);
            return e;
        }
        let Some(pool) = self.pool(ctx) else {
            e.set_retry(false);
            return e;
        };
        let head_timeout = e.etype == ErrorType::ReadTimedout
            && e.esource == ErrorSource::Upstream
            && session.response_written().is_none();
        if head_timeout {
            if let Some(l) = &ctx.current {
                pool.upstreams.record(l.slot, true);
            }
            e.set_retry(pool.retry_on.timeout && may_retry(session, ctx, pool));
            return e;
        }
        // The worker reset or closed the connection before any of its answer reached
        // the client (it died, or stopped listening with the connection in its
        // backlog): an idempotent request goes to another worker, as nginx's
        // `proxy_next_upstream error` does.
        // (Unlike `may_retry`, no check for an untried ready worker: there is no
        // answer to fall back on, and `upstream_peer` answers 502 when none is left.)
        let resend = e.esource == ErrorSource::Upstream
            && ctx.attempts <= pool.retries
            && session.req_header().method.is_idempotent()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated();
        if resend {
            if let Some(l) = &ctx.current {
                pool.upstreams.record(l.slot, true);
            }
            e.set_retry(true);
            return e;
        }
        // Pingora's default: a failure on a reused keep-alive connection (the
        // worker closed it) is retried for idempotent requests; nothing else is.
        if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.attempts > pool.retries
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        use ErrorType::*;
        let code = match (e.etype(), e.esource()) {
            (HTTPStatus(code), _) => *code,
            (ConnectTimedout, _) => 504,
            (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
            (_, ErrorSource::Upstream) => 502,
            (
                WriteError | ReadError | ConnectionClosed | ReadTimedout | WriteTimedout,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            if let Err(err) = session.respond_error(code).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let _ = front::with_conn(|c| c.request_done());
        ctx.current = None;
        let Some(pool) = self.pool(ctx) else {
            return;
        };
        if let (None, Some(s)) = (e, ctx.last_worker) {
            pool.upstreams.count_served(s);
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        pool.metrics.record(status, elapsed.as_secs_f64());
        if let Some(log) = &self.access_log {
            let req = session.req_header();
            let id = req
                .headers
                .get(headers::X_REQUEST_ID)
                .or(ctx.request_id.as_ref())
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            log.log(&access_log::Entry {
                client: client_ip(session),
                method: req.method.as_str(),
                target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
                version: req.version,
                status,
                bytes: session.body_bytes_sent(),
                duration_us: elapsed.as_micros() as u64,
                pool: &pool.name,
                worker: ctx.last_worker,
                attempts: ctx.attempts,
                request_id: id,
            });
        }
    }
}

/// Answer with a short plain-text body.
async fn respond_text(session: &mut Session, status: u16, body: &'static str) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("content-length", body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}
