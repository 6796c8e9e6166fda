//! Reading what the iptables tools say, from messages as iptables 1.8.9 prints them.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::*;

fn failed(stderr: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(1 << 8),
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

/// Messages as iptables 1.8.9 prints them, each with the line it names.
#[test]
fn finds_the_refused_line_in_either_backends_words() {
    let cases = [
        (
            "iptables-restore: line 3 failed\n",
            Some(3),
            "iptables-restore: line 3 failed",
        ),
        (
            "iptables-nft-restore: line 12 failed: Bad rule (does a matching rule exist in that chain?).\n",
            Some(12),
            "iptables-nft-restore: line 12 failed: Bad rule (does a matching rule exist in that chain?).",
        ),
        (
            "iptables-restore v1.8.9 (legacy): Couldn't load match `foo':No such file or directory\n\nError occurred at line: 2\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
            Some(2),
            "iptables-restore v1.8.9 (legacy): Couldn't load match `foo':No such file or directory",
        ),
        (
            "ip6tables-restore v1.8.9 (legacy): ip6tables-restore: unable to initialize table 'nat'\n\nError occurred at line: 1\n",
            Some(1),
            "ip6tables-restore v1.8.9 (legacy): ip6tables-restore: unable to initialize table 'nat'",
        ),
        (
            "Another app is currently holding the xtables lock. Stopped waiting after 10s.\n",
            None,
            "Another app is currently holding the xtables lock. Stopped waiting after 10s.",
        ),
        ("", None, "it exited with exit status: 1 and said nothing"),
    ];
    for (stderr, line, message) in cases {
        let output = failed(stderr);
        assert_eq!(failed_line(&output), line, "{stderr}");
        assert_eq!(tool_message(&output), message, "{stderr}");
    }
}

#[test]
fn tells_an_unavailable_table_from_other_failures() {
    let unavailable = [
        "ip6tables-restore v1.8.9 (legacy): ip6tables-restore: unable to initialize table 'nat'",
        "ip6tables-save v1.8.9 (legacy): Cannot initialize: Table does not exist (do you need to insmod?)",
        "can't initialize ip6tables table `nat': Address family not supported by protocol",
    ];
    for message in unavailable {
        let err = IptablesError::Failed {
            tool: "ip6tables-legacy-restore".into(),
            message: message.into(),
        };
        assert!(err.is_table_unavailable(), "{message}");
    }
    let other = IptablesError::Failed {
        tool: "ip6tables-nft-restore".into(),
        message: "ip6tables-nft-restore: line 3 failed: Bad rule".into(),
    };
    assert!(!other.is_table_unavailable());
}

#[test]
fn reads_the_backend_from_iptables_version() {
    assert_eq!(
        backend_in_version("iptables v1.8.9 (nf_tables)\n"),
        Some(Backend::Nft)
    );
    assert_eq!(
        backend_in_version("iptables v1.8.7 (legacy)\n"),
        Some(Backend::Legacy)
    );
    assert_eq!(backend_in_version("iptables v1.6.1\n"), None);
}

#[test]
fn names_each_tool_by_backend_family_and_action() {
    assert_eq!(
        Backend::Nft.tool(Family::Ipv4, "restore"),
        "iptables-nft-restore"
    );
    assert_eq!(
        Backend::Legacy.tool(Family::Ipv6, "save"),
        "ip6tables-legacy-save"
    );
}
