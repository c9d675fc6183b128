//! A straightforward Pingora 0.9 proxy with default settings, for comparison in
//! benchmarks: round robin over the backends given on the command line, nothing
//! else. `cargo run --release --example plain_pingora -- LISTEN BACKEND...`
//!
//! This is the "straightforward Pingora proxy" that forkyard's own figures are
//! measured against in bench/PROFILE.md; it is not part of forkyard.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};

struct Plain {
    backends: Vec<std::net::SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(
            self.backends[i],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: plain_pingora LISTEN BACKEND...");
    let backends: Vec<std::net::SocketAddr> = args.map(|a| a.parse().expect("IP:port")).collect();
    let mut server = Server::new(None).expect("server");
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Plain {
            backends,
            next: AtomicUsize::new(0),
        },
    );
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
