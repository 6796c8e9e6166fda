//! `seamctl certs`: every connected proxy's certificate as the proxy itself holds it
//! (identity, serial, issuing root, expiry), next to the control plane's trust bundle,
//! with a warning for anything that expires soon or comes from a root the mesh no longer
//! trusts. Exits non-zero when there is a warning, so scripts can alert on it.

use std::time::{Duration, SystemTime};

use anyhow::bail;

use crate::ctl::ca::{self, CaState};
use crate::ctl::fleet::{self, ProxyAnswer};
use crate::ctl::status::resolve;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The control plane's admin address (HOST:PORT).
    #[arg(long, env = "SEAM_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: String,
    /// Warn about certificates that expire within this long.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub warn_within: Duration,
}

pub async fn run(args: CertsArgs) -> anyhow::Result<()> {
    let Some(admin) = resolve(&args.admin).await?.into_iter().next() else {
        bail!("{:?} resolves to no address", args.admin);
    };
    let ca_state = ca::fetch(admin).await?;
    let proxies = fleet::each_proxy(admin, "/identity").await?;
    let (text, warnings) = render(&ca_state, &proxies, SystemTime::now(), args.warn_within);
    print!("{text}");
    if warnings > 0 {
        bail!("{warnings} warning(s)");
    }
    Ok(())
}

/// The report and how many warnings it holds.
pub fn render(
    ca_state: &CaState,
    proxies: &[ProxyAnswer],
    now: SystemTime,
    warn_within: Duration,
) -> (String, usize) {
    let mut text = ca::render(ca_state);
    text.push('\n');
    let mut warnings = 0;
    let mut rows = vec![vec![
        "SERVICE".to_owned(),
        "IDENTITY".to_owned(),
        "SERIAL".to_owned(),
        "ISSUER KEY ID".to_owned(),
        "EXPIRES".to_owned(),
        "".to_owned(),
    ]];
    let trusted: Vec<&str> = ca_state
        .roots
        .iter()
        .filter_map(|root| root.key_id.as_deref())
        .collect();
    for ProxyAnswer { proxy, answer } in proxies {
        let identity = match answer {
            Ok(identity) => identity,
            Err(err) => {
                warnings += 1;
                rows.push(vec![
                    proxy.service.clone(),
                    proxy.spiffe_id.clone().unwrap_or_default(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("WARN cannot read /identity: {err:#}"),
                ]);
                continue;
            }
        };
        let field = |name: &str| identity[name].as_str().unwrap_or("-").to_owned();
        let mut notes = Vec::new();
        let expires = match humantime::parse_rfc3339(&field("not_after")) {
            Ok(not_after) => match not_after.duration_since(now) {
                Ok(left) => {
                    if left < warn_within {
                        notes.push(format!(
                            "WARN expires within {}",
                            humantime::format_duration(warn_within)
                        ));
                    }
                    format!(
                        "in {}",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    )
                }
                Err(_) => {
                    notes.push("WARN expired".to_owned());
                    "expired".to_owned()
                }
            },
            Err(_) => {
                notes.push("WARN no expiry".to_owned());
                "-".to_owned()
            }
        };
        let issuer = field("issuer_key_id");
        if !trusted.contains(&issuer.as_str()) {
            notes.push("WARN issuer not in the trust bundle".to_owned());
        } else if trusted.first() != Some(&issuer.as_str()) {
            notes.push("from the previous root".to_owned());
        }
        warnings += notes.iter().filter(|note| note.starts_with("WARN")).count();
        rows.push(vec![
            proxy.service.clone(),
            field("spiffe_id"),
            field("serial"),
            issuer,
            expires,
            notes.join("; "),
        ]);
    }
    if proxies.is_empty() {
        text.push_str("no proxies connected\n");
    } else {
        text.push_str(&fleet::table(&rows));
    }
    (text, warnings)
}
