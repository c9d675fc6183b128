//! The front proxy: a Pingora [`ProxyHttp`] that routes each request to a pool and
//! round-robins it over that pool's ready workers.
//!
//! - A request that matches no route gets 404; a pool with no ready worker gets 503,
//!   both with a short text body.
//! - A connect failure is retried on a worker not yet tried for this request.
//! - `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are set.
//! - Every request holds an [`InFlight`] guard, so shutdown can wait for the proxy to
//!   drain.

pub mod inflight;
pub mod router;
pub mod upstreams;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use prometheus::IntCounter;

use crate::metrics::PoolRequestMetrics;
pub use inflight::{InFlight, InFlightGuard};
pub use router::Router;
use upstreams::{PoolUpstreams, ServedCounter};

/// Connect attempts beyond the first, each on another worker.
const CONNECT_RETRIES: u8 = 3;
/// Bound on connecting to a worker on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One pool as the proxy uses it.
pub struct ProxyPool {
    pub name: Arc<str>,
    pub upstreams: Arc<PoolUpstreams>,
    pub metrics: PoolRequestMetrics,
}

pub struct ForkyardProxy {
    pub pools: Vec<ProxyPool>,
    pub router: Router,
    pub inflight: Arc<InFlight>,
    pub unrouted: IntCounter,
}

pub struct RequestCtx {
    _inflight: InFlightGuard,
    start: Instant,
    pool: Option<usize>,
    tried: Vec<Backend>,
    connect_failures: u8,
    /// Counts this request against the worker it is sent to (for draining).
    worker: Option<upstreams::WorkerGuard>,
}

#[async_trait]
impl ProxyHttp for ForkyardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.inflight.enter(),
            start: Instant::now(),
            pool: None,
            tried: Vec::new(),
            connect_failures: 0,
            worker: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let Some(idx) = self.router.route(host, req.uri.path()) else {
            self.unrouted.inc();
            respond_text(session, 404, "forkyard: no route matches this request\n").await?;
            return Ok(true);
        };
        ctx.pool = Some(idx);
        if self.pools[idx].upstreams.ready_count() == 0 {
            respond_text(session, 503, "forkyard: no ready worker in this pool\n").await?;
            return Ok(true);
        }
        Ok(false)
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
        let backend = pool.upstreams.select(&ctx.tried).ok_or_else(|| {
            let code = if ctx.tried.is_empty() { 503 } else { 502 };
            Error::explain(ErrorType::HTTPStatus(code), "no ready worker left to try")
        })?;
        let addr = backend
            .addr
            .as_inet()
            .copied()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "worker is not TCP"))?;
        ctx.tried.push(backend);
        // A retry moves the request to another worker.
        ctx.worker = None;
        ctx.worker = pool.upstreams.enter(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = ctx.pool.and_then(|i| self.pools.get(i)) {
            pool.metrics.connect_errors.inc();
        }
        ctx.connect_failures += 1;
        // Nothing reached the worker yet, so any method may be retried elsewhere.
        if ctx.connect_failures <= CONNECT_RETRIES {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        if let Some(ip) = client_ip {
            let xff = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
        match host {
            Some(h) => upstream.insert_header("x-forwarded-host", h)?,
            None => {
                upstream.remove_header("x-forwarded-host");
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if e.is_none() {
            if let Some(worker) = ctx.tried.last() {
                ServedCounter::count(worker);
            }
        }
        if let Some(pool) = ctx.pool.and_then(|i| self.pools.get(i)) {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            pool.metrics
                .record(status, ctx.start.elapsed().as_secs_f64());
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
