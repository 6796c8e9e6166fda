//! The measured changes. Each rewrites the mesh file (atomically, as an operator's tools
//! do) with new endpoints for some services, then waits (bounded) until every proxy
//! subscribed to one of them has received the new generation of each, and records each
//! such proxy's convergence time: from just before the write to the last of its updates.
//! The sustained phase changes one service at a fixed rate for a bounded time, sampling
//! the control plane's memory, then checks every proxy still converges.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::fleet::Fleet;
use super::mesh::{GeneratedMesh, MAX_GENERATION};
use crate::procstat;

/// How long one change may take to reach every proxy before it counts as not converged.
pub const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Convergence times of one kind of change, in milliseconds, one per (change, proxy).
#[derive(Default)]
pub struct Convergence {
    pub changes: usize,
    pub samples_ms: Vec<f64>,
    /// Proxies that did not get a change within [`CONVERGENCE_TIMEOUT`].
    pub unconverged: usize,
    pub updates: u64,
    pub bytes: u64,
    /// From the first write to the last arrival, over all changes of the kind.
    pub busy: Duration,
}

/// The mesh file and the generations written to it.
pub struct Writer<'a> {
    pub mesh: GeneratedMesh,
    pub path: &'a Path,
    pub generation: u32,
}

impl Writer<'_> {
    /// Gives `services` the next generation and writes the file; returns when it wrote.
    fn change(&mut self, services: &[usize]) -> anyhow::Result<(u32, Instant)> {
        if self.generation >= MAX_GENERATION {
            bail!("more than {MAX_GENERATION} changes in one run");
        }
        self.generation += 1;
        for service in services {
            self.mesh.generations[*service] = self.generation;
        }
        let text = self.mesh.render();
        let written = Instant::now();
        seam_tests::mesh::write_atomically(self.path, &text)?;
        Ok((self.generation, written))
    }
}

/// Waits until every slot of `fleet` has at least the generation its service has in
/// `mesh`; returns the slots still behind after `timeout`.
pub async fn wait_converged(fleet: &Fleet, mesh: &GeneratedMesh, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let behind = fleet
            .slots
            .iter()
            .filter(|slot| {
                let got = slot.generation.load(Ordering::Acquire);
                got == u32::MAX || got < mesh.generations[slot.service]
            })
            .count();
        if behind == 0 || Instant::now() >= deadline {
            return behind;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes `changes` changes of `services_per_change` services each (spread over the mesh,
/// a different set each time), one after the other, measuring each.
pub async fn measure(
    fleet: &Fleet,
    writer: &mut Writer<'_>,
    changes: usize,
    services_per_change: usize,
) -> anyhow::Result<Convergence> {
    let services = writer.mesh.services();
    let per_change = services_per_change.clamp(1, services);
    let stride = (services / per_change).max(1);
    let mut result = Convergence::default();
    for change in 0..changes {
        let changed: Vec<usize> = (0..per_change)
            .map(|n| (change + n * stride) % services)
            .collect();
        let (updates, bytes) = (
            fleet.updates.load(Ordering::Relaxed),
            fleet.bytes.load(Ordering::Relaxed),
        );
        let (generation, written) = writer.change(&changed)?;
        let behind = wait_converged(fleet, &writer.mesh, CONVERGENCE_TIMEOUT).await;
        result.busy += written.elapsed();
        result.changes += 1;
        result.updates += fleet.updates.load(Ordering::Relaxed) - updates;
        result.bytes += fleet.bytes.load(Ordering::Relaxed) - bytes;
        let written_nanos = written.duration_since(fleet.epoch).as_nanos() as u64;
        for proxy in 0..fleet.proxies() {
            let mut latest = None;
            let mut converged = true;
            for slot in fleet.slots_of(proxy) {
                if writer.mesh.generations[slot.service] != generation {
                    continue;
                }
                if slot.generation.load(Ordering::Acquire) < generation
                    || slot.generation.load(Ordering::Acquire) == u32::MAX
                {
                    converged = false;
                }
                let arrived = slot.arrived_nanos.load(Ordering::Relaxed);
                latest = latest.max(Some(arrived));
            }
            match latest {
                None => {}
                Some(_) if !converged => result.unconverged += 1,
                Some(arrived) => result
                    .samples_ms
                    .push(arrived.saturating_sub(written_nanos) as f64 / 1e6),
            }
        }
        if behind > 0 {
            eprintln!(
                "seam-bench: {behind} subscriptions did not converge on generation {generation}"
            );
        }
    }
    Ok(result)
}

/// What the sustained phase saw.
pub struct Sustained {
    pub seconds: f64,
    pub changes: u64,
    /// The control plane's resident memory, sampled once a second (MiB).
    pub rss_mib: Vec<f64>,
    /// ACKs the control plane recorded during the phase.
    pub acks: f64,
    /// Subscriptions still behind the last change after the convergence timeout.
    pub unconverged: usize,
}

/// Changes one service `rate` times a second (round robin) for `duration`.
pub async fn sustained(
    fleet: &Fleet,
    writer: &mut Writer<'_>,
    control_plane: (u32, std::net::SocketAddr),
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Sustained> {
    let (pid, admin) = control_plane;
    let acks_before = acks(admin).await?;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rss_mib = Vec::new();
    let mut next_sample = started;
    let mut changes = 0u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        let service = changes as usize % writer.mesh.services();
        writer.change(&[service])?;
        changes += 1;
        if Instant::now() >= next_sample {
            rss_mib.push(procstat::current_rss(pid)? as f64 / (1024.0 * 1024.0));
            next_sample += Duration::from_secs(1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let unconverged = wait_converged(fleet, &writer.mesh, CONVERGENCE_TIMEOUT).await;
    Ok(Sustained {
        seconds,
        changes,
        rss_mib,
        acks: acks(admin).await? - acks_before,
        unconverged,
    })
}

/// `seam_discovery_acks_total` on the control plane.
async fn acks(admin: std::net::SocketAddr) -> anyhow::Result<f64> {
    let (status, body) = seam_control_plane::launch::http_get(admin, "/metrics").await?;
    anyhow::ensure!(status == 200, "GET /metrics answered {status}");
    Ok(seam_tests::mesh::metric_value(&body, "seam_discovery_acks_total", &[]).unwrap_or(0.0))
}
