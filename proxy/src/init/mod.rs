//! `seam-proxy init`: installs, in the network namespace it runs in, the iptables rules
//! that send the pod's TCP through its proxy (transparent mode), and with `--remove`
//! takes them out again. It is the job of a Kubernetes init container, or of a
//! docker-compose service with `cap_add: NET_ADMIN` that shares the app's namespace.
//!
//! It touches only the nat table: Seam's two chains and the one jump into each, written
//! with the system's `iptables-restore --noflush`, one transaction per address family, so
//! a rule set is either all there or not at all. Running it again leaves the same rules.
//!
//! - `flags`: the command line, and bad input as one line.
//! - `rules`: the rules themselves, a pure function of the settings.
//! - `plan`: what to write, given what the namespace holds.
//! - `backend`: nft or legacy iptables.
//! - `iptables`: running the iptables tools.

mod backend;
mod flags;
mod iptables;
mod plan;
mod port_range;
mod rules;
mod subnet;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use self::flags::InitArgs;
use self::iptables::{Backend, IptablesError};
use self::plan::{NatTable, RestoreInput};
use self::rules::{Family, Interception};

/// The word after `seam-proxy` that selects this subcommand.
pub const SUBCOMMAND: &str = "init";

/// Present whenever the kernel has IPv6 at all, even with no address configured.
const IPV6_ADDRESSES: &str = "/proc/net/if_inet6";

/// The exit code for bad input, as clap uses it.
const BAD_INPUT: u8 = 2;

#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("cannot read the {family} rules")]
    Read {
        family: &'static str,
        #[source]
        source: IptablesError,
    },
    #[error("cannot apply the {family} rules")]
    Apply {
        family: &'static str,
        #[source]
        source: IptablesError,
    },
}

impl InitError {
    fn is_table_unavailable(&self) -> bool {
        match self {
            InitError::Read { source, .. } | InitError::Apply { source, .. } => {
                source.is_table_unavailable()
            }
        }
    }
}

/// What became of one address family.
enum Outcome {
    Applied(usize),
    Printed(usize),
    NothingToRemove,
    NoNatTable,
}

/// Runs `seam-proxy init` with `args` (those after the word `init`).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let program = OsString::from("seam-proxy init");
    let args = match InitArgs::try_parse_from(std::iter::once(program).chain(args)) {
        Ok(args) => args,
        Err(error) if flags::is_help_or_version(&error) => {
            // Printing help can fail only if stdout is gone, and then nobody reads it.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("seam-proxy init: {}", flags::one_line(&error));
            return ExitCode::from(BAD_INPUT);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("seam-proxy init: {}", with_causes(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error` and each of its sources, joined by `: `.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn run(args: &InitArgs) -> Result<(), InitError> {
    let mut families = vec![Family::Ipv4];
    if Path::new(IPV6_ADDRESSES).exists() {
        families.push(Family::Ipv6);
    } else {
        say(format_args!(
            "IPv6: this namespace has none (no {IPV6_ADDRESSES}); IPv4 only"
        ));
    }
    let choice = backend::choose(args.iptables_mode, &families);
    say(format_args!("{choice}"));
    let interception = args.interception();
    let mut outcomes = Vec::new();
    for family in families {
        let outcome = match apply(args, &interception, choice.backend, family) {
            Err(error) if family == Family::Ipv6 && error.is_table_unavailable() => {
                say(format_args!(
                    "IPv6: no nat table in this namespace ({}); IPv4 only",
                    with_causes(&error)
                ));
                Outcome::NoNatTable
            }
            outcome => outcome?,
        };
        outcomes.push((family, outcome));
    }
    say(format_args!("{}", summary(args, choice.backend, &outcomes)));
    Ok(())
}

/// Reads one family's nat table, works out the change, and applies or prints it.
fn apply(
    args: &InitArgs,
    interception: &Interception,
    backend: Backend,
    family: Family,
) -> Result<Outcome, InitError> {
    let current = match iptables::save(backend, family) {
        Ok(save) => NatTable::from_save(&save),
        // A dry run is also how one reads the rules on a machine where one is not root.
        Err(error) if args.dry_run && !error.is_table_unavailable() => {
            say(format_args!(
                "{}: cannot read the current rules ({}); showing them as for a namespace \
                 without Seam's",
                family.label(),
                with_causes(&error)
            ));
            NatTable::default()
        }
        Err(source) => {
            return Err(InitError::Read {
                family: family.label(),
                source,
            });
        }
    };
    let input = if args.remove {
        plan::removal(&current)
    } else {
        Some(plan::install(interception, family, &current))
    };
    let Some(input) = input else {
        return Ok(Outcome::NothingToRemove);
    };
    if args.dry_run {
        print_dry_run(backend, family, &input);
        return Ok(Outcome::Printed(input.rule_count()));
    }
    iptables::restore(backend, family, &input).map_err(|source| InitError::Apply {
        family: family.label(),
        source,
    })?;
    Ok(Outcome::Applied(input.rule_count()))
}

/// The input exactly as it would be given, under a comment line saying for which tool.
fn print_dry_run(backend: Backend, family: Family, input: &RestoreInput) {
    print_line(format_args!(
        "# {}: {} --noflush would read:\n{}",
        family.label(),
        backend.tool(family, "restore"),
        input.text().trim_end()
    ));
}

/// One line: what was done, with which tool, and how many rules per family.
fn summary(args: &InitArgs, backend: Backend, outcomes: &[(Family, Outcome)]) -> String {
    let families: Vec<String> = outcomes
        .iter()
        .map(|(family, outcome)| {
            let what = match outcome {
                Outcome::Applied(count) | Outcome::Printed(count) => format!("{count} rules"),
                Outcome::NothingToRemove => "none installed".to_string(),
                Outcome::NoNatTable => "skipped (no nat table)".to_string(),
            };
            format!("{} {what}", family.label())
        })
        .collect();
    let action = match (args.dry_run, args.remove) {
        (true, _) => "dry run, nothing changed",
        (false, true) => "removed",
        (false, false) => "installed",
    };
    let mut line = format!(
        "{action} with iptables-{}: {}",
        backend.name(),
        families.join(", ")
    );
    if !args.remove {
        line.push_str(&format!(
            "; inbound TCP goes to port {}, outbound to port {}, uid {} is let through",
            args.inbound_port, args.outbound_port, args.proxy_uid
        ));
    }
    line
}

/// A line for the operator, on stdout: an init container's log is what they will read.
fn say(line: std::fmt::Arguments<'_>) {
    print_line(format_args!("seam-proxy init: {line}"));
}

/// Prints `line` on stdout. A reader that went away (`--dry-run | head`) is not a failure
/// of the rules, so it is not one of this program either.
fn print_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
