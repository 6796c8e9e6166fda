//! The command line as an operator types it: defaults, lists, switches, and bad input.

use super::*;

fn parse(args: &[&str]) -> Result<InitArgs, clap::Error> {
    InitArgs::try_parse_from(std::iter::once("seam-proxy init").chain(args.iter().copied()))
}

#[test]
fn defaults_are_the_proxy_defaults() {
    let args = parse(&[]).expect("no flags is valid");
    let interception = args.interception();
    assert_eq!(
        (
            interception.inbound_port,
            interception.outbound_port,
            interception.admin_port,
            interception.proxy_uid
        ),
        (4143, 4140, 4191, 2102)
    );
    assert!(interception.skip_inbound_ports.is_empty());
    assert_eq!(args.iptables_mode, IptablesMode::Auto);
    assert!(!args.dry_run && !args.remove);
}

#[test]
fn lists_are_comma_separated_and_flags_may_repeat() {
    let args = parse(&[
        "--skip-inbound-ports",
        "22,8000-8100",
        "--skip-inbound-ports=9000",
        "--skip-subnets",
        "10.0.0.0/8,fd00::/8",
        "--iptables-mode",
        "legacy",
        "--dry-run",
    ])
    .expect("valid flags");
    let interception = args.interception();
    let ports: Vec<String> = interception
        .skip_inbound_ports
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ports, ["22", "8000:8100", "9000"]);
    let subnets: Vec<String> = interception
        .skip_subnets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(subnets, ["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(args.iptables_mode, IptablesMode::Legacy);
    assert!(args.dry_run);
}

/// Each bad value gives one line naming the flag and the value.
#[test]
fn bad_input_is_one_line_naming_flag_and_value() {
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--iptables-mode", "iptables"],
            &[
                "'iptables'",
                "--iptables-mode",
                "possible values: auto, nft, legacy",
            ],
        ),
        (
            &["--inbound-port", "0"],
            &["'0'", "--inbound-port", "1 to 65535"],
        ),
        (
            &["--outbound-port", "70000"],
            &["'70000'", "--outbound-port"],
        ),
        (
            &["--skip-inbound-ports", "22,9-3"],
            &[
                "'22,9-3'",
                "9-3: ",
                "--skip-inbound-ports",
                "lower port first",
            ],
        ),
        (
            &["--skip-outbound-ports", "http"],
            &["'http'", "--skip-outbound-ports"],
        ),
        (
            &["--skip-subnets", "10.0.0.0/8,10.0.0/33"],
            &["10.0.0/33: ", "--skip-subnets"],
        ),
        (&["--proxy-uid=-1"], &["'-1'", "--proxy-uid"]),
    ];
    for (args, wanted) in cases {
        let error = parse(args).expect_err(&format!("{args:?} is bad input"));
        assert!(!is_help_or_version(&error));
        assert_eq!(error.exit_code(), 2, "{args:?}");
        let line = one_line(&error);
        assert!(!line.contains('\n'), "{line}");
        for part in wanted {
            assert!(line.contains(part), "{args:?}: {line:?} lacks {part:?}");
        }
    }
}

#[test]
fn an_empty_list_is_no_entries() {
    let args = parse(&["--skip-subnets", "", "--skip-outbound-ports= , "]).expect("empty lists");
    assert!(args.interception().skip_subnets.is_empty());
    assert!(args.interception().skip_outbound_ports.is_empty());
}

#[test]
fn switches_read_the_usual_words_and_blank_is_off() {
    for (text, wanted) in [("true", true), ("1", true), ("YES", true), ("on", true)] {
        assert_eq!(parse_switch(text), Ok(wanted), "{text}");
    }
    for text in ["false", "0", "no", "off", "", " "] {
        assert_eq!(parse_switch(text), Ok(false), "{text:?}");
    }
    assert!(parse_switch("maybe").is_err());
    assert!(
        parse(&["--dry-run", "--remove"])
            .expect("both switches")
            .remove
    );
}

#[test]
fn help_and_version_are_not_errors_to_squeeze() {
    for flag in ["--help", "--version"] {
        let error = parse(&[flag]).expect_err(flag);
        assert!(is_help_or_version(&error), "{flag}");
    }
}
