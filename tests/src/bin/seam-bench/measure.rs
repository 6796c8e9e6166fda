//! One run of the whole benchmark: start the shared upstream and the control plane (whose
//! CA also signs the peers' certificates), start every contender and check its path, then
//! measure scenario by scenario with the contenders taking turns (only one carries load
//! at any time; the others sit idle), read their processes' CPU and memory, and stop
//! them. Taking turns keeps a slow spell of a shared machine from landing on one
//! contender's numbers only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use seam_control_plane::launch::SeamProcess;
use seam_tests::TestMesh;

use crate::Durations;
use crate::certs::{HOP2_DNS_NAME, MeshCa};
use crate::contenders::haproxy::Certificates;
use crate::contenders::{
    self, Pinning, Running, SERVICE_HOST, Stopper, TcpPath, Upstream, pinned_command,
};
use crate::load::{
    self, H2LOAD, LatencyRun, LatencySamples, Mode, OHA, Saturation, ThroughputRun, Tool, WRK,
};
use crate::{procstat, tcp_load};

/// The contenders, in the order they run.
pub const CONTENDERS: [&str; 4] = ["direct", "seam", "haproxy", "nginx"];

pub struct Plan {
    pub durations: Durations,
    pub rate: u32,
    pub only: Vec<String>,
    /// How many endpoints Seam's hop 2 service lists.
    pub endpoints: u16,
}

/// The machine and the settings of the run.
pub struct Setup {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub pinning: Pinning,
    pub durations: Durations,
    pub rate: u32,
    pub versions: BTreeMap<&'static str, String>,
}

/// Why a measurement has no result.
#[derive(Clone, Debug)]
pub enum Unmeasured {
    /// Something it needs is not installed: the text names it and the command that
    /// installs it.
    Missing(String),
    /// It ran and failed, or could not run.
    Failed(String),
}

impl std::fmt::Display for Unmeasured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(text) | Self::Failed(text) => f.write_str(text),
        }
    }
}

/// What one scenario measured of one contender.
pub struct Scenario {
    pub latency: Result<LatencyRun, Unmeasured>,
    pub max: Result<ThroughputRun, Unmeasured>,
    /// CPU time of the hop processes per 1,000 requests in the fixed-rate runs.
    pub cpu_ms_per_1k: Option<f64>,
    /// The hop processes' context switches per request in the fixed-rate runs.
    pub switches: Option<SwitchRate>,
    /// Peak RSS of the largest hop process, on the scenario that reports it for its
    /// processes (the HTTP scenarios share one set, reported on HTTP/1.1).
    pub peak_rss_mib: Option<f64>,
}

/// Context switches per request, split by cause: each is a wake-up the request cost
/// (slept) or a turn the scheduler took away (preempted), so the two say how much of the
/// CPU per request is the shared core's doing rather than the proxy's own work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwitchRate {
    pub slept: f64,
    pub preempted: f64,
}

impl SwitchRate {
    fn per_request(switches: procstat::Switches, requests: u64) -> Option<Self> {
        (requests > 0).then(|| Self {
            slept: switches.slept as f64 / requests as f64,
            preempted: switches.preempted as f64 / requests as f64,
        })
    }
}

/// What one contender measured.
pub struct Measured {
    /// In the order of `Mode::ALL`.
    scenarios: [Scenario; Mode::ALL.len()],
}

impl Measured {
    /// A contender with nothing measured yet.
    pub fn new() -> Self {
        Self {
            scenarios: Mode::ALL.map(|_| Scenario {
                latency: Err(Unmeasured::Failed("not measured".into())),
                max: Err(Unmeasured::Failed("not measured".into())),
                cpu_ms_per_1k: None,
                switches: None,
                peak_rss_mib: None,
            }),
        }
    }

    pub fn scenario(&self, mode: Mode) -> &Scenario {
        &self.scenarios[mode as usize]
    }

    pub fn scenario_mut(&mut self, mode: Mode) -> &mut Scenario {
        &mut self.scenarios[mode as usize]
    }
}

pub enum Outcome {
    Measured(Box<Measured>),
    /// The peer is not installed: the command that installs it.
    Missing(String),
    Skipped,
    Failed(String),
}

pub struct Results {
    pub setup: Setup,
    pub contenders: Vec<(&'static str, Outcome)>,
}

pub async fn run_all(plan: &Plan) -> anyhow::Result<Results> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let setup = Setup {
        cores,
        cpu_model: cpu_model(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        pinning: Pinning::for_cores(cores),
        durations: plan.durations,
        rate: plan.rate,
        versions: versions().await,
    };
    eprintln!(
        "seam-bench: {} × {}, Linux {}; load on CPU {}, hops and upstream on CPU {}",
        setup.cores,
        setup.cpu_model,
        setup.kernel,
        setup.pinning.load.as_deref().unwrap_or("any"),
        setup.pinning.hops.as_deref().unwrap_or("any"),
    );
    let (mut upstream, upstream_addrs, mesh) =
        start_upstream_and_mesh(setup.pinning.hops.as_deref()).await?;
    let dir = mesh.dir().to_path_buf();
    let state_dir = mesh
        .ca_path()
        .parent()
        .context("the CA has no directory")?
        .to_path_buf();
    let ca = MeshCa::load(&state_dir)?;
    let hop1 = ca.issue(
        &dir,
        "peer-hop1",
        &seam_tests::mesh::spiffe_id("client"),
        "hop1.bench.seam.local",
    )?;
    let hop2 = ca.issue(
        &dir,
        "peer-hop2",
        &seam_tests::mesh::spiffe_id(SERVICE_HOST),
        HOP2_DNS_NAME,
    )?;
    let certificates = Certificates {
        ca: ca.ca_pem(),
        hop1: &hop1,
        hop2: &hop2,
    };

    let mut outcomes: BTreeMap<&'static str, Outcome> = BTreeMap::new();
    let mut running: Vec<(&'static str, Running)> = Vec::new();
    for name in CONTENDERS {
        if name != "direct" && !plan.only.is_empty() && !plan.only.iter().any(|only| only == name) {
            outcomes.insert(name, Outcome::Skipped);
            continue;
        }
        if let Some(install) = missing_peer(name) {
            eprintln!("seam-bench: {name} is not installed ({install})");
            outcomes.insert(name, Outcome::Missing(install));
            continue;
        }
        eprintln!("seam-bench: {name}: starting");
        let started = match name {
            "direct" => Ok(Running {
                http1: upstream_addrs.http,
                http2: upstream_addrs.http,
                hop_pids: Vec::new(),
                stopper: Stopper::Nothing,
                tcp: Ok(TcpPath {
                    addr: upstream_addrs.tcp,
                    hop_pids: Vec::new(),
                    stopper: Stopper::Nothing,
                }),
            }),
            "seam" => {
                contenders::seam::start(&mesh, upstream_addrs, &setup.pinning, plan.endpoints).await
            }
            "haproxy" => {
                contenders::haproxy::start(&dir, &certificates, upstream_addrs, &setup.pinning)
                    .await
            }
            _ => {
                contenders::nginx::start(&dir, &certificates, upstream_addrs, &setup.pinning).await
            }
        };
        match started {
            Ok(started) => {
                if let Err(why) = &started.tcp {
                    eprintln!("seam-bench: {name} has no opaque TCP path: {why}");
                }
                running.push((name, started));
            }
            Err(err) => {
                eprintln!("seam-bench: {name} did not start: {err:#}");
                outcomes.insert(name, Outcome::Failed(format!("did not start: {err:#}")));
            }
        }
    }
    let measured = measure_all(&running, &setup).await;
    for ((name, contender), measured) in running.into_iter().zip(measured) {
        contender
            .stop()
            .await
            .with_context(|| format!("stopping {name}"))?;
        outcomes.insert(name, Outcome::Measured(Box::new(measured)));
    }
    upstream.kill().await?;
    let contenders = CONTENDERS
        .iter()
        .filter_map(|name| outcomes.remove(name).map(|outcome| (*name, outcome)))
        .collect();
    Ok(Results { setup, contenders })
}

/// Every scenario for every running contender. The contenders take turns within each
/// scenario, going round a few times in a rotating order, so a slow spell of a shared
/// machine does not fall on one contender only.
async fn measure_all(contenders: &[(&'static str, Running)], setup: &Setup) -> Vec<Measured> {
    let mut measured: Vec<Measured> = contenders.iter().map(|_| Measured::new()).collect();
    for mode in Mode::ALL {
        let latency = latency_rounds(contenders, mode, setup).await;
        for (measured, (latency, cpu_ms_per_1k, switches)) in measured.iter_mut().zip(latency) {
            let scenario = measured.scenario_mut(mode);
            scenario.latency = latency;
            scenario.cpu_ms_per_1k = cpu_ms_per_1k;
            scenario.switches = switches;
        }
        let max = throughput_rounds(contenders, mode, setup).await;
        for (measured, max) in measured.iter_mut().zip(max) {
            measured.scenario_mut(mode).max = max;
        }
    }
    for ((_, running), measured) in contenders.iter().zip(&mut measured) {
        for mode in Mode::ALL.into_iter().filter(|mode| mode.opens_its_path()) {
            if let Ok((_, hop_pids)) = running.path(mode) {
                measured.scenarios[mode as usize].peak_rss_mib = peak_rss_mib(hop_pids);
            }
        }
    }
    measured
}

/// The peak RSS of the largest of `hop_pids` and their children.
fn peak_rss_mib(hop_pids: &[u32]) -> Option<f64> {
    procstat::with_children(hop_pids)
        .iter()
        .filter_map(|pid| procstat::peak_rss(*pid).ok())
        .max()
        .map(|bytes| bytes as f64 / (1024.0 * 1024.0))
}

/// Starts the shared upstream (a process of the bench, on `cpus`) and the control plane
/// of Seam's services.
pub async fn start_upstream_and_mesh(
    cpus: Option<&str>,
) -> anyhow::Result<(SeamProcess, Upstream, TestMesh)> {
    let mut command = pinned_command(std::env::current_exe()?, cpus);
    command.arg("upstream");
    let upstream = SeamProcess::spawn("upstream", command, std::process::Stdio::inherit()).await?;
    let addrs = Upstream {
        http: upstream.addr("http"),
        tcp: upstream.addr("tcp"),
    };
    let mesh = TestMesh::start(&[
        SERVICE_HOST,
        contenders::seam::CLIENT_SERVICE,
        contenders::seam::TCP_SERVICE,
    ])
    .await
    .context("starting the control plane")?;
    Ok((upstream, addrs, mesh))
}

/// The order of one round's turns: the proxies, starting one further along each round,
/// then `direct`. `direct` loads the machine hardest (a bare upstream answers several
/// times the requests a proxied path does), so it goes last in every round: which proxy
/// runs after it then changes from round to round instead of always being the one
/// listed after it.
fn turns<T>(round: usize, contenders: &[(&str, T)]) -> Vec<usize> {
    let (baseline, proxies): (Vec<usize>, Vec<usize>) =
        (0..contenders.len()).partition(|index| contenders[*index].0 == "direct");
    let count = proxies.len();
    (0..count)
        .map(|turn| proxies[(round + turn) % count])
        .chain(baseline)
        .collect()
}

/// Runs `turn` for every contender in each of `rounds` rounds, in the order `turns`
/// gives, and gathers each contender's results; a contender whose turn failed is not
/// run again and keeps that failure.
async fn take_turns<R>(
    contenders: &[(&'static str, Running)],
    rounds: u32,
    mut turn: impl AsyncFnMut(usize, &str, &Running) -> Result<R, Unmeasured>,
) -> Vec<Result<Vec<R>, Unmeasured>> {
    let mut results: Vec<Result<Vec<R>, Unmeasured>> =
        contenders.iter().map(|_| Ok(Vec::new())).collect();
    for round in 0..rounds as usize {
        for index in turns(round, contenders) {
            let (name, running) = &contenders[index];
            let Ok(done) = &mut results[index] else {
                continue;
            };
            match turn(round, name, running).await {
                Ok(result) => done.push(result),
                Err(err) => results[index] = Err(err),
            }
        }
    }
    results
}

/// The fixed-rate runs of one mode: the load split into `durations.latency_rounds` rounds
/// taking turns, a contender's rounds combined (or its first failure), with the CPU time
/// its hop processes spent per 1,000 of their requests. Before the first round of the
/// first scenario on its processes (HTTP/1.1 for the HTTP path, opaque TCP for its own)
/// each contender is warmed up with closed-loop load, so all start equally warm.
async fn latency_rounds(
    contenders: &[(&'static str, Running)],
    mode: Mode,
    setup: &Setup,
) -> Vec<(
    Result<LatencyRun, Unmeasured>,
    Option<f64>,
    Option<SwitchRate>,
)> {
    let cpus = setup.pinning.load.as_deref();
    let durations = setup.durations;
    let duration = durations.fixed_rate(mode);
    let rounds = durations.latency_rounds;
    let per_round =
        (f64::from(setup.rate) * duration.as_secs_f64() / f64::from(rounds)).round() as u64;
    let results = take_turns(contenders, rounds, async |round, name, running| {
        let (target, hop_pids) = running.path(mode)?;
        if round == 0 && mode.opens_its_path() {
            eprintln!("seam-bench:   {name}: {}: warm-up", mode.label());
            let _ = closed_loop(target, mode, durations.warm_up, cpus).await;
        }
        eprintln!(
            "seam-bench:   {name}: {}: at a fixed rate, round {}",
            mode.label(),
            round + 1
        );
        let pids = procstat::with_children(hop_pids);
        let before = hop_usage(&pids);
        let samples = fixed_rate(target, mode, setup.rate, per_round, cpus).await?;
        let spent = before
            .zip(hop_usage(&pids))
            .filter(|_| !pids.is_empty())
            .map(|(before, after)| {
                let spent = before.until(after);
                (spent.cpu, spent.switches)
            });
        Ok((samples, spent))
    })
    .await;
    results
        .into_iter()
        .map(|turns| {
            let turns = match turns {
                Ok(turns) => turns,
                Err(err) => return (Err(err), None, None),
            };
            let spent = turns.iter().try_fold(
                (Duration::ZERO, procstat::Switches::default()),
                |(cpu, switches), (_, spent)| {
                    let (round_cpu, round_switches) = (*spent)?;
                    Some((cpu + round_cpu, switches + round_switches))
                },
            );
            let samples = turns.into_iter().map(|(samples, _)| samples).collect();
            let run = LatencyRun::combine(samples)
                .ok_or_else(|| Unmeasured::Failed("no request was answered".into()));
            let Ok(answered) = &run else {
                return (run, None, None);
            };
            let requests = answered.requests;
            let Some((cpu, switches)) = spent else {
                return (run, None, None);
            };
            let cpu_ms_per_1k = cpu.as_secs_f64() * 1000.0 / requests as f64 * 1000.0;
            let switches = SwitchRate::per_request(switches, requests);
            (run, Some(cpu_ms_per_1k), switches)
        })
        .collect()
}

/// The closed-loop runs of one mode: `durations.throughput_rounds` rounds taking turns. A
/// contender's result is the median of its rounds, or the first failure.
async fn throughput_rounds(
    contenders: &[(&'static str, Running)],
    mode: Mode,
    setup: &Setup,
) -> Vec<Result<ThroughputRun, Unmeasured>> {
    let results = take_turns(
        contenders,
        setup.durations.throughput_rounds,
        async |round, name, running| {
            eprintln!(
                "seam-bench:   {name}: {}: maximum throughput, round {}",
                mode.label(),
                round + 1
            );
            let (target, hop_pids) = running.path(mode)?;
            let pids = procstat::with_children(hop_pids);
            let before = hop_usage(&pids);
            let duration = setup.durations.max(mode);
            let mut run =
                closed_loop(target, mode, duration, setup.pinning.load.as_deref()).await?;
            let requests = run.rps * duration.as_secs_f64();
            run.saturation = before
                .zip(hop_usage(&pids))
                .and_then(|(before, after)| saturation(before.until(after), requests));
            Ok(run)
        },
    )
    .await;
    results
        .into_iter()
        .map(|runs| {
            runs.and_then(|runs| {
                ThroughputRun::combine(&runs).ok_or_else(|| Unmeasured::Failed("no rounds".into()))
            })
        })
        .collect()
}

/// What the hops `spent` during a closed-loop round that answered `requests`, per
/// request; None for no requests.
fn saturation(spent: procstat::Usage, requests: f64) -> Option<Saturation> {
    (requests > 0.0).then(|| Saturation {
        cpu_ms_per_1k: spent.cpu.as_secs_f64() * 1e6 / requests,
        switches_per_request: spent.switches.total() as f64 / requests,
        kernel_share: spent.ticks.kernel_share(),
    })
}

/// What `pids` have spent so far; None if a process is gone.
fn hop_usage(pids: &[u32]) -> Option<procstat::Usage> {
    procstat::Usage::read(pids).ok()
}

async fn fixed_rate(
    target: SocketAddr,
    mode: Mode,
    rate: u32,
    requests: u64,
    cpus: Option<&str>,
) -> Result<LatencySamples, Unmeasured> {
    let samples = if mode == Mode::Tcp {
        tcp_load::fixed_rate(target, rate, requests, cpus).await
    } else {
        require(OHA)?;
        load::fixed_rate(target, mode, rate, requests, cpus).await
    };
    samples.map_err(|err| Unmeasured::Failed(format!("{err:#}")))
}

async fn closed_loop(
    target: SocketAddr,
    mode: Mode,
    duration: Duration,
    cpus: Option<&str>,
) -> Result<ThroughputRun, Unmeasured> {
    let run = match mode {
        Mode::Tcp => tcp_load::max_throughput(target, duration, cpus).await,
        Mode::Http2 => {
            require(H2LOAD)?;
            load::max_throughput(target, mode, duration, cpus).await
        }
        Mode::Http1 | Mode::NewConnection => {
            require(WRK)?;
            load::max_throughput(target, mode, duration, cpus).await
        }
    };
    run.map_err(|err| Unmeasured::Failed(format!("{err:#}")))
}

fn require(tool: Tool) -> Result<(), Unmeasured> {
    if load::installed(tool.program) {
        Ok(())
    } else {
        Err(Unmeasured::Missing(format!(
            "{} is not installed: {}",
            tool.program, tool.install
        )))
    }
}

/// The install command of a peer that is not on the PATH.
fn missing_peer(name: &str) -> Option<String> {
    let program = match name {
        "haproxy" => "haproxy",
        "nginx" => "nginx",
        _ => return None,
    };
    let on_path = load::installed(program)
        || ["/usr/sbin", "/usr/local/sbin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(program).is_file());
    (!on_path).then(|| format!("apt-get install -y {program}"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The first line each tool prints about its version (empty when it is missing).
async fn versions() -> BTreeMap<&'static str, String> {
    let mut versions = BTreeMap::new();
    for (name, program, flag) in [
        ("haproxy", "haproxy", "-v"),
        ("nginx", "nginx", "-v"),
        ("oha", "oha", "--version"),
        ("wrk", "wrk", "-v"),
        ("h2load", "h2load", "--version"),
    ] {
        let Ok(output) = tokio::process::Command::new(program)
            .arg(flag)
            .output()
            .await
        else {
            continue;
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(line) = text.lines().find(|line| !line.trim().is_empty()) {
            versions.insert(name, line.trim().to_string());
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_goes_last_and_the_proxies_take_turns_after_it() {
        let contenders = [("direct", ()), ("seam", ()), ("haproxy", ()), ("nginx", ())];
        let names = |round| -> Vec<&str> {
            turns(round, &contenders)
                .into_iter()
                .map(|index| contenders[index].0)
                .collect()
        };
        assert_eq!(names(0), ["seam", "haproxy", "nginx", "direct"]);
        assert_eq!(names(1), ["haproxy", "nginx", "seam", "direct"]);
        assert_eq!(names(2), ["nginx", "seam", "haproxy", "direct"]);
        assert_eq!(names(3), names(0));
    }
}
