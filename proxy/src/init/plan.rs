//! From what a namespace's nat table holds (its `iptables-save` output) to the
//! `iptables-restore --noflush` input that installs Seam's rules or takes them out again,
//! leaving every other rule where it is. Each input is one transaction: all of it applies
//! or none of it does.
//!
//! Why it reads the table first: under `--noflush`, both backends (nft and legacy) treat
//! the declaration of a user chain that already exists (`:SEAM_OUTPUT - [0:0]`) as "flush
//! it", so Seam's chains are simply written whole again; but an `-A` into a built-in chain
//! adds one more copy of a jump that is already there. So a jump is added only when it is
//! not there exactly once, and stale or doubled ones are deleted in the same transaction.
//! That makes a second run (an init container restarting) leave the table as it was.

use super::rules::{self, Family, Interception, Rule, SEAM_CHAINS};

/// The nat table as `iptables-save` printed it: its chains and its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    chains: Vec<String>,
    rules: Vec<Rule>,
}

impl NatTable {
    /// Reads the `*nat` section of `iptables-save` output; no such section is an empty table.
    pub fn from_save(save: &str) -> Self {
        let mut table = Self::default();
        let section = save
            .lines()
            .map(str::trim_end)
            .skip_while(|line| *line != "*nat")
            .skip(1)
            .take_while(|line| *line != "COMMIT");
        for line in section {
            if let Some(declaration) = line.strip_prefix(':') {
                let chain = declaration.split_whitespace().next().unwrap_or_default();
                table.chains.push(chain.to_string());
            } else if let Some((chain, spec)) = line
                .strip_prefix("-A ")
                .and_then(|rule| rule.split_once(' '))
            {
                table.rules.push(Rule {
                    chain: chain.to_string(),
                    spec: spec.to_string(),
                });
            }
        }
        table
    }

    fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|name| name == chain)
    }

    fn is_seam_chain(chain: &str) -> bool {
        SEAM_CHAINS.contains(&chain)
    }

    /// Rules outside Seam's chains that lead into one of them.
    fn jumps_into_seam(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|rule| !Self::is_seam_chain(&rule.chain) && rule.seam_target().is_some())
    }
}

/// The text for `iptables-restore --noflush`, one line per entry, and how many rules the
/// table holds (install) or loses (removal) once it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInput {
    lines: Vec<String>,
    rule_count: usize,
}

impl RestoreInput {
    pub fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }

    /// Line `number`, counted from 1 as iptables-restore counts in its errors.
    pub fn line(&self, number: usize) -> Option<&str> {
        self.lines.get(number.checked_sub(1)?).map(String::as_str)
    }

    pub fn rule_count(&self) -> usize {
        self.rule_count
    }
}

/// The transaction that leaves `current` holding exactly Seam's rules for `interception`
/// (plus whatever else it held): Seam's chains declared (created, or flushed if they
/// exist) and filled, and each jump added unless it is already there exactly once.
pub fn install(interception: &Interception, family: Family, current: &NatTable) -> RestoreInput {
    let mut lines = vec!["*nat".to_string()];
    lines.extend(SEAM_CHAINS.iter().map(|chain| format!(":{chain} - [0:0]")));
    let chain_rules = rules::chain_rules(interception, family);
    lines.extend(chain_rules.iter().map(Rule::append_line));
    let jumps = rules::jump_rules();
    for jump in &jumps {
        let existing: Vec<&Rule> = current
            .rules
            .iter()
            .filter(|rule| rule.chain == jump.chain && rule.seam_target() == jump.seam_target())
            .collect();
        if existing.as_slice() == [jump] {
            continue;
        }
        lines.extend(existing.iter().map(|rule| rule.delete_line()));
        lines.push(jump.append_line());
    }
    lines.push("COMMIT".to_string());
    RestoreInput {
        lines,
        rule_count: chain_rules.len() + jumps.len(),
    }
}

/// The transaction that takes every trace of Seam out of `current`: each rule that leads
/// into a Seam chain, then the chains themselves. `None` when there is nothing to remove.
pub fn removal(current: &NatTable) -> Option<RestoreInput> {
    let present: Vec<&str> = SEAM_CHAINS
        .into_iter()
        .filter(|chain| current.has_chain(chain))
        .collect();
    let jumps: Vec<&Rule> = current.jumps_into_seam().collect();
    if present.is_empty() && jumps.is_empty() {
        return None;
    }
    let mut lines = vec!["*nat".to_string()];
    lines.extend(jumps.iter().map(|rule| rule.delete_line()));
    // A chain must be empty before it can be deleted.
    lines.extend(present.iter().map(|chain| format!("-F {chain}")));
    lines.extend(present.iter().map(|chain| format!("-X {chain}")));
    lines.push("COMMIT".to_string());
    let rules_in_seam_chains = current
        .rules
        .iter()
        .filter(|rule| NatTable::is_seam_chain(&rule.chain))
        .count();
    Some(RestoreInput {
        lines,
        rule_count: jumps.len() + rules_in_seam_chains,
    })
}

#[cfg(test)]
mod tests;
