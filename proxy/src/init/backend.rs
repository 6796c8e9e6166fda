//! Which iptables backend `seam-proxy init` uses. nft and legacy rules are two separate
//! sets, and the kernel applies both, so Seam's rules belong with the rules the namespace
//! already has. With `--iptables-mode auto`: the backend that already holds rules here
//! (whichever `iptables-nft-save` or `iptables-legacy-save` shows more of), else the
//! system `iptables` command's own backend (`iptables --version`), else nft, which
//! current distributions ship as their default.

use std::fmt;

use super::iptables::{self, Backend};
use super::rules::Family;

/// The `--iptables-mode` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesMode {
    /// Decide from the rules already here, then from the system's `iptables`.
    Auto,
    Nft,
    Legacy,
}

/// The backend chosen, and why, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: Backend,
    pub reason: String,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "iptables backend {}: {}",
            self.backend.name(),
            self.reason
        )
    }
}

/// Chooses the backend for `mode`, reading the namespace's rules in `families` if asked to.
pub fn choose(mode: IptablesMode, families: &[Family]) -> BackendChoice {
    let given = |backend: Backend| BackendChoice {
        backend,
        reason: format!("--iptables-mode {}", backend.name()),
    };
    match mode {
        IptablesMode::Nft => given(Backend::Nft),
        IptablesMode::Legacy => given(Backend::Legacy),
        IptablesMode::Auto => {
            let (nft, legacy) = (
                rules_held(Backend::Nft, families),
                rules_held(Backend::Legacy, families),
            );
            let held = RulesHeld {
                nft: nft.unwrap_or(0),
                legacy: legacy.unwrap_or(0),
                readable: nft.is_some() || legacy.is_some(),
            };
            decide(held, iptables::system_default)
        }
    }
}

/// How many rules each backend holds in this namespace, over every table and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RulesHeld {
    nft: usize,
    legacy: usize,
    /// Whether either backend could be read at all (not as a user other than root).
    readable: bool,
}

/// The rules one backend shows here, or `None` if none of its tools could be run; a
/// backend whose tools are missing or fail holds none that this program could work with.
fn rules_held(backend: Backend, families: &[Family]) -> Option<usize> {
    let saves: Vec<String> = families
        .iter()
        .filter_map(|&family| iptables::save(backend, family).ok())
        .collect();
    (!saves.is_empty()).then(|| saves.iter().map(|save| count_rules(save)).sum())
}

/// Rules are the `-A` lines; tables and chains appear as soon as anyone lists them.
fn count_rules(save: &str) -> usize {
    save.lines().filter(|line| line.starts_with("-A ")).count()
}

fn decide(
    held: RulesHeld,
    system_default: impl FnOnce() -> Result<Backend, String>,
) -> BackendChoice {
    let RulesHeld {
        nft,
        legacy,
        readable,
    } = held;
    let chosen = |backend, reason| BackendChoice { backend, reason };
    match (nft, legacy) {
        (nft, 0) if nft > 0 => chosen(
            Backend::Nft,
            format!("this namespace already holds {nft} nft rules and no legacy ones"),
        ),
        (0, legacy) if legacy > 0 => chosen(
            Backend::Legacy,
            format!("this namespace already holds {legacy} legacy rules and no nft ones"),
        ),
        (nft, legacy) if nft != legacy => {
            let backend = if nft > legacy {
                Backend::Nft
            } else {
                Backend::Legacy
            };
            chosen(
                backend,
                format!(
                    "this namespace holds rules in both ({nft} nft, {legacy} legacy), and \
                     more in {}",
                    backend.name()
                ),
            )
        }
        _ => {
            let held = if !readable {
                "the rules here cannot be read with either backend".to_string()
            } else if nft == 0 {
                "no rules in this namespace yet".to_string()
            } else {
                format!("as many nft as legacy rules here ({nft})")
            };
            match system_default() {
                Ok(backend) => chosen(
                    backend,
                    format!("{held}, and the system `iptables` uses {}", backend.name()),
                ),
                Err(why) => chosen(Backend::Nft, format!("{held}, {why}; nft by default")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_backend_holding_rules_then_the_system_then_nft() {
        let nft_system = || Ok(Backend::Nft);
        let legacy_system = || Ok(Backend::Legacy);
        let unknown_system = || Err("`iptables --version` names no backend".to_string());
        type System = fn() -> Result<Backend, String>;
        let cases: [(usize, usize, System, Backend, &str); 7] = [
            (
                0,
                4,
                nft_system,
                Backend::Legacy,
                "already holds 4 legacy rules and no nft",
            ),
            (
                3,
                0,
                legacy_system,
                Backend::Nft,
                "already holds 3 nft rules and no legacy",
            ),
            (
                2,
                9,
                nft_system,
                Backend::Legacy,
                "rules in both (2 nft, 9 legacy), and more in legacy",
            ),
            (9, 2, legacy_system, Backend::Nft, "more in nft"),
            (
                0,
                0,
                legacy_system,
                Backend::Legacy,
                "no rules in this namespace yet, and the system `iptables` uses legacy",
            ),
            (
                5,
                5,
                nft_system,
                Backend::Nft,
                "as many nft as legacy rules here (5)",
            ),
            (
                0,
                0,
                unknown_system,
                Backend::Nft,
                "names no backend; nft by default",
            ),
        ];
        for (nft, legacy, system, backend, reason) in cases {
            let held = RulesHeld {
                nft,
                legacy,
                readable: true,
            };
            let choice = decide(held, system);
            assert_eq!(choice.backend, backend, "{nft} nft, {legacy} legacy");
            assert!(choice.reason.contains(reason), "{}", choice.reason);
        }
    }

    #[test]
    fn says_so_when_no_backend_can_be_read() {
        let held = RulesHeld {
            nft: 0,
            legacy: 0,
            readable: false,
        };
        let choice = decide(held, || Ok(Backend::Legacy));
        assert_eq!(choice.backend, Backend::Legacy);
        assert!(
            choice
                .reason
                .starts_with("the rules here cannot be read with either backend, "),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn counts_rules_not_tables_chains_or_comments() {
        let save = "# Warning: iptables-legacy tables present\n*nat\n:PREROUTING ACCEPT [0:0]\n\
                    :SEAM_OUTPUT - [0:0]\n-A OUTPUT -p tcp -j SEAM_OUTPUT\n\
                    -A SEAM_OUTPUT -o lo -j RETURN\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(count_rules(save), 2);
        assert_eq!(count_rules(""), 0);
    }

    #[test]
    fn a_given_mode_is_taken_as_is() {
        let choice = choose(IptablesMode::Legacy, &[]);
        assert_eq!(choice.backend, Backend::Legacy);
        assert_eq!(
            choice.to_string(),
            "iptables backend legacy: --iptables-mode legacy"
        );
    }
}
