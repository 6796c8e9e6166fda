//! The rules, line by line, for the default settings and for each setting that changes them.

use super::*;

fn defaults() -> Interception {
    Interception {
        inbound_port: 4143,
        outbound_port: 4140,
        admin_port: 4191,
        proxy_uid: 2102,
        skip_inbound_ports: Vec::new(),
        skip_outbound_ports: Vec::new(),
        skip_subnets: Vec::new(),
    }
}

fn lines(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(Rule::append_line).collect()
}

fn ports(list: &str) -> Vec<PortRange> {
    list.split(',')
        .map(|entry| entry.parse().expect("a valid port or range"))
        .collect()
}

#[test]
fn default_rules_for_ipv4() {
    assert_eq!(
        lines(&chain_rules(&defaults(), Family::Ipv4)),
        [
            r#"-A SEAM_PREROUTING -i lo -m comment --comment "seam: inbound: over loopback" -j RETURN"#,
            r#"-A SEAM_PREROUTING -p tcp -m tcp --dport 4143 -m comment --comment "seam: inbound: to the proxy inbound port" -j RETURN"#,
            r#"-A SEAM_PREROUTING -p tcp -m tcp --dport 4191 -m comment --comment "seam: inbound: to the proxy admin port" -j RETURN"#,
            r#"-A SEAM_PREROUTING -p tcp -m comment --comment "seam: inbound: redirect to the proxy" -j REDIRECT --to-ports 4143"#,
            r#"-A SEAM_OUTPUT -m owner --uid-owner 2102 -m comment --comment "seam: outbound: made by the proxy" -j RETURN"#,
            r#"-A SEAM_OUTPUT -o lo -m comment --comment "seam: outbound: over loopback" -j RETURN"#,
            r#"-A SEAM_OUTPUT -d 127.0.0.0/8 -m comment --comment "seam: outbound: to loopback addresses" -j RETURN"#,
            r#"-A SEAM_OUTPUT -p tcp -m comment --comment "seam: outbound: redirect to the proxy" -j REDIRECT --to-ports 4140"#,
        ]
    );
    assert_eq!(
        lines(&jump_rules()),
        [
            r#"-A PREROUTING -p tcp -m comment --comment "seam: intercept inbound TCP" -j SEAM_PREROUTING"#,
            r#"-A OUTPUT -p tcp -m comment --comment "seam: intercept outbound TCP" -j SEAM_OUTPUT"#,
        ]
    );
}

#[test]
fn ipv6_differs_only_in_the_loopback_network() {
    let ipv4 = lines(&chain_rules(&defaults(), Family::Ipv4));
    let ipv6 = lines(&chain_rules(&defaults(), Family::Ipv6));
    let differences: Vec<(&String, &String)> =
        ipv4.iter().zip(&ipv6).filter(|(a, b)| a != b).collect();
    assert_eq!(ipv4.len(), ipv6.len());
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(differences[0].1.contains("-d ::1/128 "), "{differences:?}");
}

#[test]
fn every_rule_is_tcp_only_or_a_return_and_carries_a_seam_comment() {
    let mut interception = defaults();
    interception.skip_inbound_ports = ports("22,8000-8100");
    interception.skip_outbound_ports = ports("5432");
    interception.skip_subnets = vec!["10.0.0.0/8".parse().expect("subnet")];
    let mut rules = chain_rules(&interception, Family::Ipv4);
    rules.extend(jump_rules());
    for rule in &rules {
        assert!(
            rule.spec.contains(r#"-m comment --comment "seam: "#),
            "{rule:?}"
        );
        assert!(
            rule.spec.ends_with("-j RETURN") || rule.spec.starts_with("-p tcp "),
            "a redirect or a jump must be for TCP only: {rule:?}"
        );
    }
}

#[test]
fn settings_change_the_rules_they_name() {
    struct Case {
        change: fn(&mut Interception),
        family: Family,
        wanted: &'static [&'static str],
        unwanted: &'static [&'static str],
    }
    let cases = [
        Case {
            change: |settings| {
                settings.inbound_port = 15006;
                settings.outbound_port = 15001;
                settings.admin_port = 15000;
                settings.proxy_uid = 1337;
            },
            family: Family::Ipv4,
            wanted: &[
                "-A SEAM_PREROUTING -p tcp -m tcp --dport 15006 ",
                "-A SEAM_PREROUTING -p tcp -m tcp --dport 15000 ",
                "-j REDIRECT --to-ports 15006",
                "-A SEAM_OUTPUT -m owner --uid-owner 1337 ",
                "-j REDIRECT --to-ports 15001",
            ],
            unwanted: &["4143", "4140", "4191", "2102"],
        },
        Case {
            change: |settings| settings.skip_inbound_ports = ports("22,8000-8100"),
            family: Family::Ipv4,
            wanted: &[
                r#"-A SEAM_PREROUTING -p tcp -m multiport --dports 22,8000:8100 -m comment --comment "seam: inbound: skipped ports" -j RETURN"#,
            ],
            unwanted: &["SEAM_OUTPUT -p tcp -m multiport"],
        },
        Case {
            change: |settings| settings.skip_outbound_ports = ports("5432,9000-9100"),
            family: Family::Ipv6,
            wanted: &[
                r#"-A SEAM_OUTPUT -p tcp -m multiport --dports 5432,9000:9100 -m comment --comment "seam: outbound: skipped ports" -j RETURN"#,
            ],
            unwanted: &["SEAM_PREROUTING -p tcp -m multiport"],
        },
        Case {
            change: |settings| {
                settings.skip_subnets = ["10.0.0.0/8", "fd00::/8", "192.168.1.5"]
                    .iter()
                    .map(|subnet| subnet.parse().expect("subnet"))
                    .collect();
            },
            family: Family::Ipv4,
            wanted: &[
                r#"-A SEAM_OUTPUT -d 10.0.0.0/8 -m comment --comment "seam: outbound: skipped subnet" -j RETURN"#,
                r#"-A SEAM_OUTPUT -d 192.168.1.5/32 -m comment"#,
            ],
            unwanted: &["fd00::/8"],
        },
        Case {
            change: |settings| {
                settings.skip_subnets = ["10.0.0.0/8", "fd00::/8"]
                    .iter()
                    .map(|subnet| subnet.parse().expect("subnet"))
                    .collect();
            },
            family: Family::Ipv6,
            wanted: &["-A SEAM_OUTPUT -d fd00::/8 -m comment"],
            unwanted: &["10.0.0.0/8"],
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        let mut interception = defaults();
        (case.change)(&mut interception);
        let text = lines(&chain_rules(&interception, case.family)).join("\n");
        for wanted in case.wanted {
            assert!(
                text.contains(wanted),
                "case {index}: no {wanted:?} in\n{text}"
            );
        }
        for unwanted in case.unwanted {
            assert!(
                !text.contains(unwanted),
                "case {index}: {unwanted:?} in\n{text}"
            );
        }
    }
}

/// The exceptions come before the redirect in each chain, or they would never be reached.
#[test]
fn each_chain_ends_with_its_redirect() {
    let mut interception = defaults();
    interception.skip_inbound_ports = ports("22");
    interception.skip_outbound_ports = ports("23");
    let rules = chain_rules(&interception, Family::Ipv4);
    for chain in SEAM_CHAINS {
        let in_chain: Vec<&Rule> = rules.iter().filter(|rule| rule.chain == chain).collect();
        let (last, exceptions) = in_chain.split_last().expect("each chain has rules");
        assert!(last.spec.contains("-j REDIRECT"), "{last:?}");
        assert!(
            exceptions
                .iter()
                .all(|rule| rule.spec.ends_with("-j RETURN"))
        );
    }
}

/// `multiport` takes fifteen ports, a range counting as two: longer lists are split.
#[test]
fn long_port_lists_are_split_at_fifteen_slots() {
    let sixteen_ports: String = (1..=16)
        .map(|port| format!("{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let seven_ranges_and_a_port = "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15";
    let eight_ranges = "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15-16";
    let cases = [
        (
            sixteen_ports.as_str(),
            vec!["1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "16"],
        ),
        (
            seven_ranges_and_a_port,
            vec!["1:2,3:4,5:6,7:8,9:10,11:12,13:14,15"],
        ),
        (
            eight_ranges,
            vec!["1:2,3:4,5:6,7:8,9:10,11:12,13:14", "15:16"],
        ),
        ("22", vec!["22"]),
    ];
    for (list, groups) in cases {
        let mut interception = defaults();
        interception.skip_inbound_ports = ports(list);
        let found: Vec<String> = chain_rules(&interception, Family::Ipv4)
            .iter()
            .filter_map(|rule| {
                let after = rule.spec.split_once("--dports ")?.1;
                Some(after.split_whitespace().next()?.to_string())
            })
            .collect();
        assert_eq!(found, groups, "{list}");
    }
}

#[test]
fn recognises_rules_that_lead_into_seam_chains() {
    let cases = [
        ("OUTPUT", "-p tcp -j SEAM_OUTPUT", Some(OUTBOUND_CHAIN)),
        ("PREROUTING", "-j SEAM_PREROUTING", Some(INBOUND_CHAIN)),
        ("MINE", "-d 10.0.0.0/8 -g SEAM_OUTPUT", Some(OUTBOUND_CHAIN)),
        ("OUTPUT", "-p tcp -j SEAM_OUTPUT_OLD", None),
        (
            "OUTPUT",
            "-m comment --comment \"-j SEAM_OUTPUT later\" -j RETURN",
            None,
        ),
        ("OUTPUT", "-j RETURN", None),
    ];
    for (chain, spec, target) in cases {
        assert_eq!(Rule::new(chain, spec).seam_target(), target, "{spec}");
    }
}
