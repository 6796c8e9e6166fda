//! What bad input in bulk does to the binaries, and how they word their failures: 10,000
//! connections that speak no known protocol are refused and counted, and leave a log of a
//! few dozen lines, not 10,000; a control plane out of file descriptors waits for them
//! instead of spinning a core, and serves again once they are back; a fatal error is
//! printed once; a proxy that cannot reach its control plane says why without repeating
//! the cause.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seam_control_plane::launch::SeamProcess;
use seam_tests::logs::ChildLog;
use seam_tests::mesh::{self, TestMesh, metric_value, seam_command};
use seam_tests::tls::{self, ProbeOutcome};
use seam_tests::{TwoHop, wait};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bad connections the proxy is sent.
const FLOOD: usize = 10_000;
/// How many are open at once.
const FLOOD_CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_connections_of_an_unknown_protocol_leave_a_short_log() {
    let mesh = TwoHop::start().await.expect("two-hop mesh starts");
    let inbound = mesh.b.inbound();
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..FLOOD_CONCURRENCY {
        let next = next.clone();
        senders.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < FLOOD {
                let Ok(mut tcp) = TcpStream::connect(inbound).await else {
                    continue;
                };
                let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    wait::until(
        "b counts every refused connection",
        Duration::from_secs(60),
        || async {
            let metrics = mesh.b.metrics().await?;
            let refused = metric_value(
                &metrics,
                "seam_connections_refused_total",
                &[("direction", "inbound"), ("reason", "unknown_protocol")],
            );
            anyhow::ensure!(refused == Some(FLOOD as f64), "refused so far: {refused:?}");
            Ok(())
        },
    )
    .await
    .expect("every connection counted");
    // The flood's windows end within 10 s; each says in one line what it left out.
    let summary = mesh
        .b
        .log()
        .wait_for_line(
            "more refusals than are logged one by one",
            Duration::from_secs(30),
        )
        .await
        .expect("a summary line");
    assert!(summary.contains("unknown_protocol"), "{summary}");
    let log = mesh.b.log().text();
    let refusal_lines = log
        .lines()
        .filter(|line| line.contains("speaks neither TLS nor HTTP"))
        .count();
    assert!(
        (1..=60).contains(&refusal_lines),
        "{refusal_lines} lines for {FLOOD} refused connections: a few per 10 s window"
    );
    assert!(
        log.lines().count() < 200,
        "the log grew to {} lines",
        log.lines().count()
    );
    assert_eq!(mesh.app_b.requests_seen(), 0);
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line names the command in parentheses")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports these in USER_HZ, which is 100 whatever the kernel's own tick.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_out_of_file_descriptors_waits_instead_of_spinning() {
    // A mesh only for its CA state and mesh file; the control plane under test runs beside
    // it on the same files, with 40 file descriptors (it uses about 16 when idle).
    let mesh = TestMesh::start(&["a"]).await.expect("mesh");
    let (log, stderr) =
        ChildLog::create("limited control plane", mesh.dir().join("limited.log")).expect("log");
    let binary = mesh::seam_binary("seam-control-plane").expect("binary");
    let mut command = tokio::process::Command::new("prlimit");
    command
        .args(["--nofile=40:40", "--"])
        .arg(binary)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(mesh.dir().join("state"))
        .arg("--mesh-file")
        .arg(mesh.mesh_path())
        .env("RUST_LOG", "info");
    let mut limited = SeamProcess::spawn("limited control plane", command, stderr)
        .await
        .unwrap_or_else(|err| panic!("{err:#}\n{}", log.tail()));
    limited
        .wait_ready(mesh::READY_TIMEOUT)
        .await
        .expect("ready");
    let grpc = limited.addr("grpc");
    let pid = limited.pid().expect("pid");

    // Connections that never start their handshake each hold a descriptor for the
    // handshake timeout (10 s); the ones beyond the limit wait in the accept queue.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(TcpStream::connect(grpc).await.expect("connect"));
    }
    log.wait_for_line("accept failed", Duration::from_secs(5))
        .await
        .expect("the control plane runs out of descriptors");
    // A measurement window, not a synchronisation: a loop that retries a failing accept
    // at once burns the whole window on a core.
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time(pid) - before;
    assert!(
        used < Duration::from_millis(500),
        "the control plane used {used:?} of CPU in 2 s while out of descriptors"
    );
    let failures = log
        .text()
        .lines()
        .filter(|line| line.contains("accept failed"))
        .count();
    assert!(failures <= 5, "{failures} log lines about failed accepts");

    // Descriptors back: it completes TLS handshakes again (the probe's HTTP/1 request then
    // meets the gRPC server's HTTP/2, which is not what this checks).
    drop(held);
    wait::until("TLS handshakes again", Duration::from_secs(30), || async {
        let outcome = tls::probe_inbound(
            grpc,
            tls::client_config_without_cert(),
            "seam-control-plane",
        )
        .await?;
        let handshake_failed = matches!(
            outcome,
            ProbeOutcome::Hung { .. }
                | ProbeOutcome::Refused {
                    stage: "tcp connect" | "tls handshake",
                    ..
                }
        );
        anyhow::ensure!(!handshake_failed, "{outcome:?}");
        Ok(())
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}\n{}", log.tail()));
    assert!(
        !log.text().contains("mesh file refused"),
        "the mesh file was read again with no change to it"
    );
}

/// Runs a binary to its exit, returning its stderr.
async fn run_to_exit(mut command: tokio::process::Command) -> (bool, String) {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the binary exits")
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_is_printed_once() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr: SocketAddr = taken.local_addr().expect("address");
    let mut proxy = seam_command("seam-proxy").expect("command");
    proxy
        .args(["--service", "a", "--inbound", &taken_addr.to_string()])
        .args(["--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--trust-anchors")
        .arg(mesh.ca_path())
        .args(["--control-plane", &mesh.grpc_addr().to_string()])
        .env("SEAM_JOIN_TOKEN", mesh::join_token("a"));
    let (succeeded, stderr) = run_to_exit(proxy).await;
    assert!(!succeeded, "{stderr}");
    let wanted = format!("cannot listen on {taken_addr} (--inbound)");
    assert_eq!(stderr.matches(&wanted).count(), 1, "{stderr}");

    let mut control_plane = seam_command("seam-control-plane").expect("command");
    control_plane
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(mesh.dir().join("other-state"))
        .arg("--mesh-file")
        .arg(mesh.dir().join("no-such-mesh.yaml"));
    let (succeeded, stderr) = run_to_exit(control_plane).await;
    assert!(!succeeded, "{stderr}");
    assert_eq!(
        stderr.matches("cannot read the mesh file").count(),
        1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_without_its_control_plane_says_why_without_repeating_the_cause() {
    let mesh = TestMesh::start(&["a"]).await.expect("mesh");
    // A port nobody listens on: bound, read back, closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let (log, stderr) =
        ChildLog::create("lonely proxy", mesh.dir().join("lonely.log")).expect("log");
    let mut command = seam_command("seam-proxy").expect("command");
    command
        .args(["--service", "a", "--inbound", "127.0.0.1:0"])
        .args(["--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--trust-anchors")
        .arg(mesh.ca_path())
        .args(["--control-plane", &closed.to_string()])
        .env("SEAM_JOIN_TOKEN", mesh::join_token("a"));
    let _proxy = SeamProcess::spawn("lonely proxy", command, stderr)
        .await
        .expect("the proxy starts without its control plane");
    let line = log
        .wait_for_line("cannot get a certificate", Duration::from_secs(20))
        .await
        .expect("the proxy says it cannot get a certificate");
    assert_eq!(
        line.matches("Connection refused").count(),
        1,
        "the cause is said once: {line}"
    );
}
