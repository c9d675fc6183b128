//! Fault injection for the test suite, compiled only with the cargo feature
//! `fault-injection` (off by default, never in a release build): a request that
//! carries `X-Forkyard-Test-Panic: 1` panics inside its proxy task. The suite uses
//! it to prove that a panic in one request task is contained to that connection.

use pingora::http::RequestHeader;

pub const PANIC_HEADER: &str = "x-forkyard-test-panic";

/// Panic when `req` asks for it.
pub fn maybe_panic(req: &RequestHeader) {
    if req
        .headers
        .get(PANIC_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
    {
        panic!("fault injection: the request carried {PANIC_HEADER}: 1");
    }
}
