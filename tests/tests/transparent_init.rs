//! `seam-proxy init` against the real binary, in pods made of network namespaces (root
//! only; these tests fail, never skip, without it): a second run and a second `--remove`
//! change nothing, `--remove` gives the namespace back exactly as it was, `--dry-run`
//! changes nothing, both iptables backends work and `auto` follows the rules already
//! there, bad input is one line and exit 2 with no rule touched, a rule iptables refuses
//! is named and nothing is installed, and the rules really send each kind of connection
//! where they should (IPv4 and IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use seam_tests::intercepted_pods::{
    ADMIN_PORT, APP_PORT, INBOUND_PORT, InterceptedPods, OUTBOUND_PORT, PROXY_UID,
    SKIPPED_OUTBOUND_PORT,
};
use seam_tests::interception::{StandIn, first_arrival};
use seam_tests::netns::NetNs;
use seam_tests::proxy_init::{InitRun, run_init};
use tokio::io::AsyncWriteExt;

/// An app port of pod a that inbound interception covers.
const INTERCEPTED_INBOUND_PORT: u16 = 8080;
/// Ports inside `SKIPPED_INBOUND_PORTS` (`22,8500-8600`): the single one and one in the range.
const SKIPPED_INBOUND_EXAMPLES: [u16; 2] = [22, 8550];

/// Every save tool, so a comparison sees both backends and both families.
const SAVE_TOOLS: [&str; 4] = [
    "iptables-nft-save",
    "ip6tables-nft-save",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
];

/// All of a namespace's rules, in every backend and family, normalised.
async fn all_rules(namespace: &NetNs) -> String {
    let mut rules = String::new();
    for tool in SAVE_TOOLS {
        let save = namespace
            .iptables_save(tool)
            .await
            .unwrap_or_else(|err| panic!("{tool}: {err:#}"));
        rules.push_str(&format!("== {tool}\n{save}"));
    }
    rules
}

/// Puts rules of someone else's into `backend`'s tables, IPv4 and IPv6, nat and filter.
async fn add_foreign_rules(namespace: &NetNs, backend: &str) {
    let rules: [(&str, &[&str]); 3] = [
        (
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                "203.0.113.7/32",
                "-p",
                "tcp",
                "-j",
                "DNAT",
                "--to-destination",
                "10.0.0.1",
            ],
        ),
        (
            "ip6tables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                "2001:db8::7/128",
                "-p",
                "tcp",
                "-j",
                "RETURN",
            ],
        ),
        (
            "iptables",
            &[
                "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT",
            ],
        ),
    ];
    for (program, args) in rules {
        let tool = format!("{program}-{backend}");
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        namespace
            .run(&tool, &all)
            .await
            .unwrap_or_else(|err| panic!("{tool}: {err:#}"));
    }
}

async fn init(namespace: &NetNs, args: &[&str]) -> InitRun {
    run_init(namespace, args)
        .await
        .and_then(InitRun::expect_success)
        .unwrap_or_else(|err| panic!("seam-proxy init {args:?}: {err:#}"))
}

fn namespace(label: &str) -> NetNs {
    NetNs::create(label).expect("a network namespace (the system tests need root)")
}

async fn init_twice_changes_nothing(backend: &str) {
    let pod = namespace("pod");
    let mode = ["--iptables-mode", backend];
    let first = init(&pod, &mode).await;
    assert!(
        first.stdout.contains(&format!(
            "iptables backend {backend}: --iptables-mode {backend}"
        )),
        "{first}"
    );
    assert!(
        first.stdout.contains("IPv4 10 rules, IPv6 10 rules"),
        "{first}"
    );
    let after_first = all_rules(&pod).await;
    init(&pod, &mode).await;
    assert_eq!(
        all_rules(&pod).await,
        after_first,
        "a second run changed the rules"
    );

    for tool in ["iptables", "ip6tables"] {
        let save = pod
            .iptables_save(&format!("{tool}-{backend}-save"))
            .await
            .expect("save");
        for wanted in [
            ":SEAM_PREROUTING -",
            ":SEAM_OUTPUT -",
            "-A PREROUTING -p tcp -m comment --comment \"seam: intercept inbound TCP\" -j SEAM_PREROUTING",
            "-A OUTPUT -p tcp -m comment --comment \"seam: intercept outbound TCP\" -j SEAM_OUTPUT",
            "-j REDIRECT --to-ports 4143",
            "-j REDIRECT --to-ports 4140",
            "-m owner --uid-owner 2102",
        ] {
            assert!(
                save.contains(wanted),
                "{tool}-{backend}: no {wanted:?} in\n{save}"
            );
        }
        let rule_lines: Vec<&str> = save
            .lines()
            .filter(|line| line.starts_with("-A "))
            .collect();
        assert_eq!(rule_lines.len(), 10, "{save}");
        assert!(
            rule_lines
                .iter()
                .all(|line| line.contains("--comment \"seam: ")),
            "every rule carries a seam comment:\n{save}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_twice_changes_nothing_with_nft() {
    init_twice_changes_nothing("nft").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_twice_changes_nothing_with_legacy() {
    init_twice_changes_nothing("legacy").await;
}

async fn remove_restores_the_original_rules(backend: &str) {
    let pod = namespace("pod");
    add_foreign_rules(&pod, backend).await;
    let original = all_rules(&pod).await;
    let flags = [
        "--skip-inbound-ports",
        "22,8000-8100",
        "--skip-subnets",
        "10.0.0.0/8,fd00::/8",
    ];
    init(&pod, &flags).await;
    let installed = all_rules(&pod).await;
    assert_ne!(installed, original, "init installed nothing");
    assert!(
        installed.contains("-d 203.0.113.7/32"),
        "the foreign rule stays:\n{installed}"
    );

    let removed = init(&pod, &["--remove"]).await;
    assert!(
        removed.stdout.contains(&format!(
            "removed with iptables-{backend}: IPv4 12 rules, IPv6 12 rules"
        )),
        "{removed}"
    );
    assert_eq!(
        all_rules(&pod).await,
        original,
        "--remove left the rules changed"
    );

    let again = init(&pod, &["--remove"]).await;
    assert!(
        again
            .stdout
            .contains("IPv4 none installed, IPv6 none installed"),
        "{again}"
    );
    assert_eq!(
        all_rules(&pod).await,
        original,
        "a second --remove changed the rules"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_restores_the_original_rules_with_nft() {
    remove_restores_the_original_rules("nft").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_restores_the_original_rules_with_legacy() {
    remove_restores_the_original_rules("legacy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_rules_and_changes_nothing() {
    for mode in ["nft", "legacy"] {
        let pod = namespace("pod");
        let before = all_rules(&pod).await;
        let run = init(&pod, &["--dry-run", "--iptables-mode", mode]).await;
        assert_eq!(all_rules(&pod).await, before, "--dry-run changed the rules");
        for wanted in [
            &format!(
                "# IPv4: iptables-{mode}-restore --noflush would read:\n*nat\n:SEAM_PREROUTING - [0:0]\n"
            ),
            &format!("# IPv6: ip6tables-{mode}-restore --noflush would read:\n*nat\n"),
            "-A SEAM_OUTPUT -d 127.0.0.0/8 ",
            "-A SEAM_OUTPUT -d ::1/128 ",
            "-A SEAM_PREROUTING -p tcp -m comment --comment \"seam: inbound: redirect to the proxy\" -j REDIRECT --to-ports 4143\n",
            "\nCOMMIT\n",
            "dry run, nothing changed",
        ] {
            assert!(run.stdout.contains(wanted), "no {wanted:?} in {run}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_follows_the_backend_that_already_holds_rules() {
    let pod = namespace("pod");
    pod.run(
        "iptables-legacy",
        &[
            "-w", "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT",
        ],
    )
    .await
    .expect("a legacy rule");
    let run = init(&pod, &[]).await;
    assert!(
        run.stdout.contains(
            "iptables backend legacy: this namespace already holds 1 legacy rules and no nft ones"
        ),
        "{run}"
    );
    let legacy = pod
        .iptables_save("iptables-legacy-save")
        .await
        .expect("save");
    assert!(legacy.contains(":SEAM_OUTPUT -"), "{legacy}");
    let nft = pod.iptables_save("iptables-nft-save").await.expect("save");
    assert!(!nft.contains("SEAM_"), "nft got rules too:\n{nft}");

    let fresh = namespace("fresh");
    let run = init(&fresh, &["--dry-run"]).await;
    assert!(
        run.stdout
            .contains("no rules in this namespace yet, and the system `iptables` uses"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_one_line_and_exit_2_with_no_rule_touched() {
    let pod = namespace("pod");
    add_foreign_rules(&pod, "nft").await;
    init(&pod, &[]).await;
    let before = all_rules(&pod).await;
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--iptables-mode", "ebtables"],
            &["--iptables-mode", "'ebtables'"],
        ),
        (&["--inbound-port", "0"], &["--inbound-port", "'0'"]),
        (
            &["--outbound-port", "70000"],
            &["--outbound-port", "'70000'"],
        ),
        (&["--admin-port", "0"], &["--admin-port", "'0'"]),
        (
            &["--skip-inbound-ports", "22,9-3"],
            &["--skip-inbound-ports", "9-3"],
        ),
        (
            &["--skip-outbound-ports", "70000"],
            &["--skip-outbound-ports", "70000"],
        ),
        (
            &["--skip-subnets", "10.0.0.0/8,10.0.0.300/8"],
            &["--skip-subnets", "10.0.0.300/8"],
        ),
    ];
    for (args, wanted) in cases {
        for remove in [false, true] {
            let mut all = args.to_vec();
            if remove {
                all.push("--remove");
            }
            let run = run_init(&pod, &all).await.expect("seam-proxy init runs");
            assert_eq!(run.status.code(), Some(2), "{all:?}: {run}");
            assert_eq!(
                run.stderr.lines().count(),
                1,
                "{all:?}: not one line: {run}"
            );
            for part in wanted {
                assert!(run.stderr.contains(part), "{all:?}: no {part:?} in {run}");
            }
            assert_eq!(all_rules(&pod).await, before, "{all:?} changed the rules");
        }
    }
}

/// A rule the kernel side refuses (iptables will not match uid 2^32-1, the "no uid" of
/// the system calls) fails the whole transaction: the error names the rule and the
/// reason, the exit code is 1, and the namespace keeps exactly the rules it had.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_rule_is_named_with_the_reason_and_nothing_is_installed() {
    for backend in ["nft", "legacy"] {
        let pod = namespace("pod");
        add_foreign_rules(&pod, backend).await;
        let before = all_rules(&pod).await;
        let args = ["--iptables-mode", backend, "--proxy-uid", "4294967295"];
        let run = run_init(&pod, &args).await.expect("seam-proxy init runs");
        assert_eq!(run.status.code(), Some(1), "{run}");
        for wanted in [
            format!(
                "cannot apply the IPv4 rules: iptables-{backend}-restore refused line 8 of the IPv4 rules"
            ),
            "`-A SEAM_OUTPUT -m owner --uid-owner 4294967295 -m comment".to_string(),
            "Bad value for \"--uid-owner\" option".to_string(),
        ] {
            assert!(run.stderr.contains(&wanted), "no {wanted:?} in {run}");
        }
        assert_eq!(
            all_rules(&pod).await,
            before,
            "a refused transaction changed the rules"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_connections_reach_the_outbound_listener_with_their_original_destination() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    for target in pods.b.both_families(APP_PORT) {
        let server = StandIn::bind(pods.b.netns(), "server in b", target)
            .await
            .expect("server");
        let arrival = pods
            .connect(&pods.a, target, &server)
            .await
            .expect("an arrival");
        assert_eq!(arrival.listener, "outbound proxy", "to {target}");
        let loopback: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::LOCALHOST, OUTBOUND_PORT).into()
        } else {
            (Ipv6Addr::LOCALHOST, OUTBOUND_PORT).into()
        };
        assert_eq!(arrival.local_addr().expect("local address"), loopback);
        assert_eq!(
            arrival
                .original_destination()
                .expect("original destination"),
            target
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skipped_ports_and_subnets_go_straight_to_the_server() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    let skipped = [(&pods.b, SKIPPED_OUTBOUND_PORT), (&pods.c, APP_PORT)];
    for (pod, port) in skipped {
        for target in pod.both_families(port) {
            let server = StandIn::bind(pod.netns(), "server", target)
                .await
                .expect("server");
            let arrival = pods
                .connect(&pods.a, target, &server)
                .await
                .expect("an arrival");
            assert_eq!(arrival.listener, "server", "to {target}");
            assert_eq!(arrival.local_addr().expect("local address"), target);
        }
    }
}

/// A copy of `seam-connect` that any user can run, wherever the checkout lives (a
/// checkout under `/root` is closed to other users).
fn connect_program() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("seam-connect-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let program = dir.path().join("seam-connect");
    std::fs::copy(env!("CARGO_BIN_EXE_seam-connect"), &program).expect("copy seam-connect");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, program)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_uid_goes_straight_through_and_other_users_do_not() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    let (_dir, program) = connect_program();
    for target in pods.b.both_families(APP_PORT) {
        let server = StandIn::bind(pods.b.netns(), "server in b", target)
            .await
            .expect("server");
        for (uid, wanted) in [
            (PROXY_UID, "server in b"),
            (PROXY_UID + 1, "outbound proxy"),
        ] {
            let client = pods
                .a
                .netns()
                .command_as(uid, uid, &program)
                .arg(target.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("seam-connect starts");
            let [outbound, inbound] = pods.proxy_stand_ins(target);
            let mut arrival = first_arrival(&[outbound, inbound, &server])
                .await
                .unwrap_or_else(|err| panic!("uid {uid} to {target}: {err:#}"));
            arrival
                .stream
                .write_all(format!("{}\n", arrival.listener).as_bytes())
                .await
                .expect("answer the client");
            let output = client.wait_with_output().await.expect("seam-connect ends");
            assert!(
                output.status.success(),
                "seam-connect: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                wanted,
                "uid {uid} to {target}"
            );
            assert_eq!(arrival.listener, wanted, "uid {uid} to {target}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_calling_its_own_address_is_not_redirected() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    for target in pods.a.both_families(APP_PORT) {
        let app = StandIn::bind(pods.a.netns(), "app in a", target)
            .await
            .expect("app");
        let arrival = pods
            .connect(&pods.a, target, &app)
            .await
            .expect("an arrival");
        assert_eq!(arrival.listener, "app in a", "to {target}");
        assert_eq!(arrival.local_addr().expect("local address"), target);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_connections_reach_the_inbound_listener_with_their_original_destination() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    for target in pods.a.both_families(INTERCEPTED_INBOUND_PORT) {
        let app = StandIn::bind(pods.a.netns(), "app in a", target)
            .await
            .expect("app");
        let arrival = pods
            .connect(&pods.b, target, &app)
            .await
            .expect("an arrival");
        assert_eq!(arrival.listener, "inbound proxy", "to {target}");
        let mut landed_at = target;
        landed_at.set_port(INBOUND_PORT);
        assert_eq!(arrival.local_addr().expect("local address"), landed_at);
        assert_eq!(
            arrival
                .original_destination()
                .expect("original destination"),
            target
        );
        assert_eq!(
            arrival.peer.ip(),
            if target.is_ipv4() {
                IpAddr::from(pods.b.ipv4())
            } else {
                IpAddr::from(pods.b.ipv6())
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_and_skipped_inbound_ports_are_not_redirected() {
    let pods = InterceptedPods::start()
        .await
        .expect("three pods, a intercepted (needs root)");
    let ports = [
        ADMIN_PORT,
        SKIPPED_INBOUND_EXAMPLES[0],
        SKIPPED_INBOUND_EXAMPLES[1],
    ];
    for port in ports {
        for target in pods.a.both_families(port) {
            let app = StandIn::bind(pods.a.netns(), "app in a", target)
                .await
                .expect("app");
            let arrival = pods
                .connect(&pods.b, target, &app)
                .await
                .expect("an arrival");
            assert_eq!(arrival.listener, "app in a", "to {target}");
            assert_eq!(arrival.local_addr().expect("local address"), target);
        }
    }
}
