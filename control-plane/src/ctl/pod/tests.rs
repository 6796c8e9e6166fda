use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use clap::Parser;

use super::*;
use crate::ctl::{Cli, Command as CtlCommand};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn parse(args: &[&str]) -> PodArgs {
    let mut line = vec!["seamctl", "pod"];
    line.extend_from_slice(args);
    match Cli::try_parse_from(line).unwrap().command {
        CtlCommand::Pod(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn the_proxy_flags_and_the_app_command_are_split_at_the_second_separator() {
    let args = parse(&[
        "--trust-anchors=/var/lib/seam-trust/ca.pem",
        "--join-token-file",
        "/run/secrets/seam-token-front",
        "--transparent",
        "--init-arg=--skip-inbound-ports=8080",
        "--",
        "--service",
        "front",
        "--admin",
        "0.0.0.0:4191",
        "--",
        "seamctl",
        "sample-app",
        "--name",
        "front",
    ]);
    assert!(args.transparent);
    assert_eq!(args.init_args, ["--skip-inbound-ports=8080"]);
    assert_eq!(args.proxy_uid, 2102);
    assert_eq!(
        Commands::split(&args.rest).unwrap(),
        Commands {
            proxy_args: strings(&["--service", "front", "--admin", "0.0.0.0:4191"]),
            app: Some(strings(&["seamctl", "sample-app", "--name", "front"])),
        }
    );
}

#[test]
fn without_an_app_the_pod_runs_the_proxy_alone() {
    let args = parse(&[
        "--trust-anchors=ca.pem",
        "--join-token-file=token",
        "--",
        "--service",
        "api",
    ]);
    assert!(!args.transparent);
    let commands = Commands::split(&args.rest).unwrap();
    assert_eq!(commands.proxy_args, strings(&["--service", "api"]));
    assert_eq!(commands.app, None);
}

#[test]
fn an_empty_app_command_is_refused() {
    let error = Commands::split(&strings(&["--service", "api", "--"])).unwrap_err();
    assert!(
        error.to_string().contains("nothing after the second `--`"),
        "{error}"
    );
}

#[test]
fn the_token_and_anchors_are_required() {
    let error = Cli::try_parse_from(["seamctl", "pod", "--", "--service", "api"]).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("--trust-anchors") && text.contains("--join-token-file"),
        "{text}"
    );
}

#[test]
fn the_app_status_becomes_the_pod_status() {
    assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
    // Killed by SIGKILL (9): what a shell reports, 128 + 9.
    assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
}
