//! The flags of `seam-proxy init`, each also read from `SEAM_<FLAG>`, and the one-line
//! form of a bad-input error: an init container's log shows the last lines it printed,
//! so a mistake must fit on one and name the flag and the value.

use std::str::FromStr;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::backend::IptablesMode;
use super::port_range::{self, PortRange};
use super::rules::Interception;
use super::subnet::Subnet;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "seam-proxy init",
    version,
    about = "Sends this network namespace's TCP through the Seam proxy with iptables \
             (nat table, chains SEAM_PREROUTING and SEAM_OUTPUT), for IPv4 and IPv6",
    after_help = "Needs CAP_NET_ADMIN in the pod's network namespace. Running it again \
                  leaves the same rules; --remove takes Seam's rules out and leaves every \
                  other rule alone."
)]
pub struct InitArgs {
    /// The proxy's inbound listener port: TCP arriving for the pod is redirected to it.
    #[arg(long, env = "SEAM_INBOUND_PORT", value_name = "PORT", default_value = "4143",
          value_parser = port_range::parse_port)]
    pub inbound_port: u16,
    /// The proxy's outbound listener port: TCP the pod opens is redirected to it.
    #[arg(long, env = "SEAM_OUTBOUND_PORT", value_name = "PORT", default_value = "4140",
          value_parser = port_range::parse_port)]
    pub outbound_port: u16,
    /// The proxy's admin port, never redirected.
    #[arg(long, env = "SEAM_ADMIN_PORT", value_name = "PORT", default_value = "4191",
          value_parser = port_range::parse_port)]
    pub admin_port: u16,
    /// The user id the proxy runs as: its own connections are never redirected.
    #[arg(
        long,
        env = "SEAM_PROXY_UID",
        value_name = "UID",
        default_value_t = 2102
    )]
    pub proxy_uid: u32,
    /// Inbound ports reaching the app directly, e.g. `22,8000-8100`.
    #[arg(long, env = "SEAM_SKIP_INBOUND_PORTS", value_name = "PORTS")]
    pub skip_inbound_ports: Vec<CommaList<PortRange>>,
    /// Outbound ports the app reaches directly, e.g. `5432,9000-9100`.
    #[arg(long, env = "SEAM_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    pub skip_outbound_ports: Vec<CommaList<PortRange>>,
    /// IPv4 and IPv6 networks the app reaches directly, e.g. `10.0.0.0/8,fd00::/8`.
    #[arg(long, env = "SEAM_SKIP_SUBNETS", value_name = "CIDRS")]
    pub skip_subnets: Vec<CommaList<Subnet>>,
    /// The iptables backend: the one holding this namespace's rules (auto), or as given.
    #[arg(long, env = "SEAM_IPTABLES_MODE", value_name = "MODE", value_enum,
          default_value_t = IptablesMode::Auto)]
    pub iptables_mode: IptablesMode,
    /// Print the iptables-restore input for each address family; change nothing.
    #[arg(long, env = "SEAM_DRY_RUN", value_parser = parse_switch)]
    pub dry_run: bool,
    /// Take Seam's rules out again; every other rule stays.
    #[arg(long, env = "SEAM_REMOVE", value_parser = parse_switch)]
    pub remove: bool,
}

impl InitArgs {
    pub fn interception(&self) -> Interception {
        Interception {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            admin_port: self.admin_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports: CommaList::concat(&self.skip_inbound_ports),
            skip_outbound_ports: CommaList::concat(&self.skip_outbound_ports),
            skip_subnets: CommaList::concat(&self.skip_subnets),
        }
    }
}

/// A comma-separated list, as one flag value or one `SEAM_*` variable holds it. An empty
/// value is an empty list, so a template may leave `SEAM_SKIP_SUBNETS=""` unset-looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommaList<T>(Vec<T>);

impl<T: Clone> CommaList<T> {
    /// The entries of every occurrence of the flag, in order.
    fn concat(lists: &[Self]) -> Vec<T> {
        lists
            .iter()
            .flat_map(|list| list.0.iter().cloned())
            .collect()
    }
}

impl<T: FromStr<Err = String>> FromStr for CommaList<T> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.parse().map_err(|why| format!("{entry}: {why}")))
            .collect::<Result<_, _>>()
            .map(CommaList)
    }
}

/// A switch's `SEAM_*` variable: `true`, `1`, `yes`, `on`, or `false`, `0`, `no`, `off`,
/// and empty (a template's blank) is off.
fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("a switch is true or false (or 1/0, yes/no, on/off)".to_string()),
    }
}

/// Whether `error` is a request for help or the version, which clap prints as usual.
pub fn is_help_or_version(error: &clap::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// clap's error on one line: its first line (which names the flag and the value), plus
/// the possible values when it lists them on a later line.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if let Some(ContextValue::Strings(values)) = error.get(ContextKind::ValidValue)
        && !values.is_empty()
    {
        line.push_str(&format!(" (possible values: {})", values.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests;
