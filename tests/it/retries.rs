//! Retries: connect failures go to another worker for any method; bad responses
//! are retried only for idempotent requests.

use crate::harness::*;

#[test]
fn a_worker_that_refuses_connections_gives_no_client_errors() {
    let pool = fixture_pool("web", 3, "");
    let port = first_port(&pool);
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 3);
    // Slot 1 stays "ready" but stops accepting, before the proxy ever used it.
    let refusing: std::net::SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    http_get(refusing, "/close-listener", &[]).expect("close the listener");
    wait_for_or_log(&fy, SHORT, "slot 1 to refuse connections", || {
        std::net::TcpStream::connect(refusing)
            .is_err()
            .then_some(())
    });
    for i in 0..60 {
        let r = fy.get("/").expect("request");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_ne!(r.json()["slot"], "1");
    }
    let errors = fy
        .metric(r#"forkyard_upstream_connect_errors_total{pool="web"}"#)
        .unwrap();
    assert!(errors >= 1.0, "the refusing worker was tried: {errors}");
    assert!(fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap() >= 1.0);
}

#[test]
fn bad_responses_are_retried_for_get_but_a_post_is_never_retried_once_sent() {
    let extra = "    retry_on: [503]\n    eject: { consecutive_failures: 0 }\n    env: { FIXTURE_FAIL_SLOT: \"1\" }\n";
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, extra)], ""));
    fy.wait_workers_ready("web", 2);
    let retries = || fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap();
    for _ in 0..10 {
        let r = fy.get("/flaky").unwrap();
        assert_eq!(
            r.status, 200,
            "a GET answered 503 is retried elsewhere: {r:?}"
        );
    }
    let after_gets = retries();
    assert!(after_gets >= 4.0, "GETs were retried: {after_gets}");

    let mut failed = 0;
    for _ in 0..10 {
        let r = http_request(fy.proxy, "POST", "/flaky", &[], b"payload").unwrap();
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        failed += usize::from(r.status == 503);
    }
    assert!(
        failed >= 4,
        "POSTs to the failing worker got its 503: {failed}"
    );
    assert_eq!(retries(), after_gets, "no POST was retried");
}

#[test]
fn a_worker_dying_mid_request_is_retried_for_get_and_not_for_post() {
    // Slot 0 exits without answering `/crash?slot=0`; slot 1 answers it.
    let extra = "    eject: { consecutive_failures: 0 }\n";
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, extra)], ""));
    fy.wait_workers_ready("web", 2);
    let died = || {
        fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="exit_code"}"#)
            .unwrap()
    };
    // Round robin: two GETs in a row reach both slots, so one of them hits slot 0.
    for _ in 0..2 {
        let r = fy.get("/crash?slot=0").unwrap();
        assert_eq!(
            r.status, 200,
            "the GET was answered by the other worker: {r:?}"
        );
        assert_eq!(r.json()["slot"], "1");
    }
    wait_for_or_log(&fy, SHORT, "slot 0 to have died", || {
        (died() >= 1.0).then_some(())
    });
    assert!(fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap() >= 1.0);

    // A POST that reached the dying worker is not sent again: the client gets 502.
    fy.wait_workers_ready("web", 2);
    let before = died();
    let retries = fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = http_request(fy.proxy, "POST", "/crash?slot=0", &[], b"payload").unwrap();
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502], "one POST reached slot 0 and got 502");
    wait_for_or_log(&fy, SHORT, "slot 0 to have died again", || {
        (died() > before).then_some(())
    });
    assert_eq!(
        fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap(),
        retries,
        "no POST was retried"
    );
}
