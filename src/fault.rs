//! Fault injection for the test suite, compiled only with the cargo feature
//! `fault-injection` (off by default, never in a release build): a request that
//! carries `X-Forkyard-Test-Panic: 1` panics inside its proxy task. The suite uses
//! it to prove that a panic in one request task is contained to that connection.
//! A pool whose `env` sets `FORKYARD_TEST_ACTOR_PANIC: "1"` makes the supervising
//! task of its first worker to become ready panic, once per forkyard process, to
//! prove that a panicking worker actor is replaced and its process group killed.

use pingora::http::RequestHeader;

pub(crate) const PANIC_HEADER: &str = "x-forkyard-test-panic";

/// Panic when `req` asks for it.
pub(crate) fn maybe_panic(req: &RequestHeader) {
    if req
        .headers
        .get(PANIC_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
    {
        panic!("fault injection: the request carried {PANIC_HEADER}: 1");
    }
}

pub(crate) const ACTOR_PANIC_ENV: &str = "FORKYARD_TEST_ACTOR_PANIC";

/// Panic once per process in a worker actor of a pool that asks for it.
pub(crate) fn maybe_panic_actor(pool: &crate::config::PoolConfig) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let asked = pool
        .env
        .iter()
        .any(|(k, v)| k == ACTOR_PANIC_ENV && v == "1");
    if asked && !DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        panic!("fault injection: {ACTOR_PANIC_ENV}=1 in pool {}", pool.name);
    }
}
