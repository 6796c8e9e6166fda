//! The rules `seam-proxy init` installs in the nat table, as the text `iptables-restore`
//! reads: a pure function of the settings and the address family, so every rule can be
//! checked without root. Two chains of Seam's own hold the decisions (`SEAM_PREROUTING`
//! for connections arriving at the pod, `SEAM_OUTPUT` for connections the pod opens), and
//! one jump from each built-in chain, for TCP only, leads into them. Every rule carries a
//! `seam: ...` comment, so `iptables-save` shows whose it is and why it is there.
//!
//! The text is spelled exactly as `iptables-save` prints it back (with either backend), so
//! what is installed can be compared with what is wanted, line for line.

use super::port_range::PortRange;
use super::subnet::Subnet;

/// The chain connections arriving at the pod go through.
pub const INBOUND_CHAIN: &str = "SEAM_PREROUTING";
/// The chain connections opened in the pod go through.
pub const OUTBOUND_CHAIN: &str = "SEAM_OUTPUT";
/// Seam's own chains, in the order they are declared.
pub const SEAM_CHAINS: [&str; 2] = [INBOUND_CHAIN, OUTBOUND_CHAIN];

/// A `multiport` match takes at most fifteen ports, a range counting as two.
const MULTIPORT_SLOTS: usize = 15;

/// IPv4 or IPv6: each has its own tables, tools and loopback network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The loopback network, whose destinations are never redirected.
    fn loopback(self) -> &'static str {
        match self {
            Family::Ipv4 => "127.0.0.0/8",
            Family::Ipv6 => "::1/128",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

/// What to intercept and what to let through: the settings the rules are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interception {
    /// Where redirected inbound connections go (the proxy's inbound listener).
    pub inbound_port: u16,
    /// Where redirected outbound connections go (the proxy's outbound listener).
    pub outbound_port: u16,
    /// The proxy's admin port: probes reach it directly.
    pub admin_port: u16,
    /// The proxy's own connections are never redirected, or they would loop back into it.
    pub proxy_uid: u32,
    pub skip_inbound_ports: Vec<PortRange>,
    pub skip_outbound_ports: Vec<PortRange>,
    /// Of both families; each family's rules take the subnets of that family.
    pub skip_subnets: Vec<Subnet>,
}

/// One rule: the chain it is in and the rest of its `-A` line, as `iptables-save` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    fn new(chain: &str, spec: impl Into<String>) -> Self {
        Self {
            chain: chain.to_string(),
            spec: spec.into(),
        }
    }

    /// `matches` then the comment then `-j <target>`: the order `iptables-save` prints.
    fn commented(chain: &str, matches: &str, comment: &str, target: &str) -> Self {
        let matches = if matches.is_empty() {
            String::new()
        } else {
            format!("{matches} ")
        };
        Self::new(
            chain,
            format!("{matches}-m comment --comment \"seam: {comment}\" -j {target}"),
        )
    }

    /// The line that appends this rule.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }

    /// The line that deletes this rule.
    pub fn delete_line(&self) -> String {
        format!("-D {} {}", self.chain, self.spec)
    }

    /// The Seam chain this rule jumps (or goes) to, if any.
    pub fn seam_target(&self) -> Option<&'static str> {
        SEAM_CHAINS.into_iter().find(|chain| {
            [format!("-j {chain}"), format!("-g {chain}")]
                .iter()
                .any(|jump| self.spec == *jump || self.spec.ends_with(&format!(" {jump}")))
        })
    }
}

/// The rules inside Seam's two chains, in order: first every exception, then the redirect.
pub fn chain_rules(interception: &Interception, family: Family) -> Vec<Rule> {
    let mut rules = inbound_rules(interception);
    rules.extend(outbound_rules(interception, family));
    rules
}

/// SEAM_PREROUTING: everything arriving for the pod goes to the inbound listener, except
/// loopback, connections meant for the proxy itself, and the skipped ports.
fn inbound_rules(interception: &Interception) -> Vec<Rule> {
    let chain = INBOUND_CHAIN;
    let mut rules = vec![
        Rule::commented(chain, "-i lo", "inbound: over loopback", "RETURN"),
        Rule::commented(
            chain,
            &format!("-p tcp -m tcp --dport {}", interception.inbound_port),
            "inbound: to the proxy inbound port",
            "RETURN",
        ),
        Rule::commented(
            chain,
            &format!("-p tcp -m tcp --dport {}", interception.admin_port),
            "inbound: to the proxy admin port",
            "RETURN",
        ),
    ];
    rules.extend(skip_port_rules(
        chain,
        &interception.skip_inbound_ports,
        "inbound: skipped ports",
    ));
    rules.push(Rule::commented(
        chain,
        "-p tcp",
        "inbound: redirect to the proxy",
        &format!("REDIRECT --to-ports {}", interception.inbound_port),
    ));
    rules
}

/// SEAM_OUTPUT: everything the pod opens goes to the outbound listener, except the proxy's
/// own connections, loopback (which also covers the pod calling its own address: such
/// connections are routed over `lo`), the skipped subnets and the skipped ports.
fn outbound_rules(interception: &Interception, family: Family) -> Vec<Rule> {
    let chain = OUTBOUND_CHAIN;
    let mut rules = vec![
        Rule::commented(
            chain,
            &format!("-m owner --uid-owner {}", interception.proxy_uid),
            "outbound: made by the proxy",
            "RETURN",
        ),
        Rule::commented(chain, "-o lo", "outbound: over loopback", "RETURN"),
        Rule::commented(
            chain,
            &format!("-d {}", family.loopback()),
            "outbound: to loopback addresses",
            "RETURN",
        ),
    ];
    rules.extend(
        interception
            .skip_subnets
            .iter()
            .filter(|subnet| subnet.family() == family)
            .map(|subnet| {
                Rule::commented(
                    chain,
                    &format!("-d {subnet}"),
                    "outbound: skipped subnet",
                    "RETURN",
                )
            }),
    );
    rules.extend(skip_port_rules(
        chain,
        &interception.skip_outbound_ports,
        "outbound: skipped ports",
    ));
    rules.push(Rule::commented(
        chain,
        "-p tcp",
        "outbound: redirect to the proxy",
        &format!("REDIRECT --to-ports {}", interception.outbound_port),
    ));
    rules
}

/// RETURN rules for `ports`, as few `multiport` matches as their fifteen slots allow.
fn skip_port_rules(chain: &str, ports: &[PortRange], comment: &str) -> Vec<Rule> {
    let mut groups: Vec<Vec<PortRange>> = Vec::new();
    let mut slots_used = MULTIPORT_SLOTS;
    for &range in ports {
        if slots_used + range.multiport_slots() > MULTIPORT_SLOTS {
            groups.push(Vec::new());
            slots_used = 0;
        }
        groups
            .last_mut()
            .expect("a group was pushed above when none had room")
            .push(range);
        slots_used += range.multiport_slots();
    }
    groups
        .iter()
        .map(|group| {
            let list: Vec<String> = group.iter().map(ToString::to_string).collect();
            Rule::commented(
                chain,
                &format!("-p tcp -m multiport --dports {}", list.join(",")),
                comment,
                "RETURN",
            )
        })
        .collect()
}

/// The jumps from the built-in chains into Seam's, one per chain, for TCP only.
pub fn jump_rules() -> [Rule; 2] {
    [
        Rule::commented(
            "PREROUTING",
            "-p tcp",
            "intercept inbound TCP",
            INBOUND_CHAIN,
        ),
        Rule::commented("OUTPUT", "-p tcp", "intercept outbound TCP", OUTBOUND_CHAIN),
    ]
}

#[cfg(test)]
mod tests;
