//! Opaque TCP in explicit mode: `--tcp-upstream ADDR=SERVICE` gives an app that cannot use
//! an HTTP proxy (a database client, say) a local address whose connections are carried
//! over mTLS to the service. A protocol where the client speaks first and one where the
//! server does both work, a half-close crosses both proxies, the callee counts the stream
//! with the caller's identity, and its `allow` list refuses a caller it does not name.

use std::time::Duration;

use seam_tests::mesh::{metric_value, spiffe_id};
use seam_tests::proxy::ProxyOptions;
use seam_tests::streams::{GREETING, StreamApp, talk_lines};
use seam_tests::{EchoServer, TestMesh, wait};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_upstream_carries_client_first_and_server_first_protocols_over_mtls() {
    let mesh = TestMesh::start(&["a", "db", "smtp"]).await.expect("mesh");
    let app_a = EchoServer::start("a").await.expect("app a");
    let echo =
        StreamApp::echo(TcpListener::bind("127.0.0.1:0").await.expect("bind")).expect("echo app");
    let greeter = StreamApp::greeter(TcpListener::bind("127.0.0.1:0").await.expect("bind"))
        .expect("greeter app");
    let (a, db, smtp) = tokio::try_join!(
        mesh.start_proxy_with(
            ProxyOptions::new("a", app_a.addr())
                .args(&["--tcp-upstream", "127.0.0.1:0=db,127.0.0.1:0=smtp"])
        ),
        mesh.start_proxy("db", echo.addr()),
        mesh.start_proxy("smtp", greeter.addr()),
    )
    .expect("proxies");
    mesh.set_endpoints(&[
        ("a", &[a.inbound()]),
        ("db", &[db.inbound()]),
        ("smtp", &[smtp.inbound()]),
    ])
    .await
    .expect("endpoints");

    let tcp = TcpStream::connect(a.tcp_upstream("db"))
        .await
        .expect("connect");
    let (heard, last) = talk_lines(tcp, false, &["select 1", "select 2"])
        .await
        .expect("talk");
    assert_eq!(heard, ["select 1", "select 2"]);
    assert_eq!(last, "bye after 2", "the half-close crossed both proxies");

    let tcp = TcpStream::connect(a.tcp_upstream("smtp"))
        .await
        .expect("connect");
    let (heard, _) =
        tokio::time::timeout(Duration::from_secs(10), talk_lines(tcp, true, &["EHLO a"]))
            .await
            .expect("the server's greeting comes first, unasked")
            .expect("talk");
    assert_eq!(heard, [GREETING, "EHLO a"]);

    for (proxy, service) in [(&db, "db"), (&smtp, "smtp")] {
        let metrics = proxy.metrics().await.expect("metrics");
        let streams = metric_value(
            &metrics,
            "seam_opaque_streams_total",
            &[
                ("direction", "inbound"),
                ("service", service),
                ("peer", &spiffe_id("a")),
            ],
        );
        assert_eq!(streams, Some(1.0), "{metrics}");
    }
    let metrics = a.metrics().await.expect("a's metrics");
    let sent = metric_value(
        &metrics,
        "seam_opaque_bytes_total",
        &[
            ("direction", "outbound"),
            ("service", "db"),
            ("flow", "sent"),
        ],
    );
    assert_eq!(sent, Some(18.0), "two lines of 9 bytes: {metrics}");

    // db now names only smtp: a's streams are refused, counted with a's identity.
    mesh.set_service_lines("db", &["allow: [smtp]"])
        .await
        .expect("allow list");
    wait::until("db refuses a", Duration::from_secs(10), || async {
        let tcp = TcpStream::connect(a.tcp_upstream("db")).await?;
        let outcome = talk_lines(tcp, false, &["select 3"]).await;
        anyhow::ensure!(
            !matches!(&outcome, Ok((heard, _)) if heard == &["select 3".to_owned()]),
            "still answered: {outcome:?}"
        );
        Ok(())
    })
    .await
    .expect("refused");
    let metrics = db.metrics().await.expect("db's metrics");
    let denied = metric_value(
        &metrics,
        "seam_authorization_denied_total",
        &[("caller", &spiffe_id("a")), ("reason", "not_allowed")],
    );
    assert!(denied >= Some(1.0), "{metrics}");
}
