//! When to take each step of a root rotation. `seamctl ca rotate` (through the admin
//! port) starts one: a new root is introduced into the trust bundle at once; after one
//! certificate lifetime every proxy has renewed (they renew at ~70 %) and so trusts it,
//! and the new root is promoted to signing; after one more lifetime every leaf of the old
//! root has expired, and the old root is retired. A restarted control plane resumes a
//! rotation in progress and waits a full lifetime again before the next step, which is
//! never too early. Replicas sharing the CA's store each run this schedule; the store's
//! lock makes the first replica due take a step and the others pick it up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::ca::{CaError, CertificateAuthority, RotationPhase};

/// What `/ca` shows about the rotation.
#[derive(Debug, Clone, Serialize)]
pub struct RotationStatus {
    pub phase: RotationPhase,
    /// Seconds until the next step, while a rotation is in progress.
    pub next_step_in_seconds: Option<f64>,
}

pub struct Rotation {
    ca: Arc<CertificateAuthority>,
    /// How long between steps: the workload certificate lifetime.
    step_after: Duration,
    next_step_at: Mutex<Option<Instant>>,
}

impl Rotation {
    pub fn new(ca: Arc<CertificateAuthority>, step_after: Duration) -> Arc<Self> {
        let next_step_at = (ca.phase() != RotationPhase::Idle).then(|| Instant::now() + step_after);
        Arc::new(Self {
            ca,
            step_after,
            next_step_at: Mutex::new(next_step_at),
        })
    }

    /// Starts a rotation: introduces a new root now and schedules the next step.
    pub fn start(&self) -> Result<RotationStatus, CaError> {
        self.schedule_next();
        if let Err(err) = self.ca.introduce_root() {
            if self.ca.phase() == RotationPhase::Idle {
                *self.lock() = None;
            }
            return Err(err);
        }
        Ok(self.status())
    }

    pub fn status(&self) -> RotationStatus {
        let next = *self.lock();
        RotationStatus {
            phase: self.ca.phase(),
            next_step_in_seconds: next
                .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64()),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Option<Instant>> {
        self.next_step_at.lock()
    }

    fn schedule_next(&self) {
        *self.lock() = Some(Instant::now() + self.step_after);
    }

    /// Takes the steps as they fall due, for as long as the task runs. A step another
    /// replica took (picked up from the shared store) restarts the wait, so each step is
    /// one lifetime after the previous one wherever it was taken, never sooner.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.ca.subscribe();
        let mut phase = self.ca.phase();
        loop {
            let due = *self.lock();
            let step_due = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if self.ca.phase() != phase {
                        phase = self.ca.phase();
                        *self.lock() = (phase != RotationPhase::Idle).then(|| Instant::now() + self.step_after);
                    }
                }
                () = step_due => self.take_due_step(),
            }
        }
    }

    fn take_due_step(&self) {
        let step = match self.ca.phase() {
            RotationPhase::Introduced => self.ca.promote_root(),
            RotationPhase::Promoted => self.ca.retire_old_roots(),
            RotationPhase::Idle => Ok(()),
        };
        match step {
            Ok(()) if self.ca.phase() == RotationPhase::Idle => *self.lock() = None,
            Ok(()) => self.schedule_next(),
            // Another replica took it first; its change reschedules the next one.
            Err(CaError::NoRotationStep(..)) => {
                tracing::info!(phase = ?self.ca.phase(), "another control plane replica took this rotation step");
            }
            Err(err) => {
                tracing::error!(error = %err, "a root rotation step failed; retrying in a minute");
                *self.lock() = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}

/// How long to wait before retrying a failed step (a full disk, say).
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// When a root expires, for `/ca`.
pub fn root_summary(der: &[u8]) -> serde_json::Value {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
            serde_json::json!({
                "subject": cert.subject().to_string(),
                "serial": crate::ca::hex(cert.raw_serial()),
                "key_id": key_id(&cert),
                "not_after": humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(not_after)
                ).to_string(),
            })
        }
        Err(err) => serde_json::json!({ "error": err.to_string() }),
    }
}

/// The subject key identifier, hex; proxies show their issuer's as `issuer_key_id`.
fn key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(crate::ca::hex(id.0))
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn introduces_then_promotes_then_retires_one_lifetime_apart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap());
        let old_root = ca.trust_bundle()[0].clone();
        let lifetime = Duration::from_secs(60);
        let rotation = Rotation::new(ca.clone(), lifetime);
        tokio::spawn(rotation.clone().run());

        let status = rotation.start().unwrap();
        assert_eq!(status.phase, RotationPhase::Introduced);
        assert_eq!(ca.trust_bundle().len(), 2);
        assert_eq!(ca.trust_bundle()[0], old_root, "the old root still signs");
        assert!(rotation.start().is_err(), "one rotation at a time");

        tokio::time::sleep(lifetime - Duration::from_secs(1)).await;
        assert_eq!(ca.phase(), RotationPhase::Introduced, "promoted too early");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ca.phase(), RotationPhase::Promoted);
        let bundle = ca.trust_bundle();
        assert_ne!(bundle[0], old_root, "the new root signs");
        assert!(bundle.contains(&old_root), "the old root is still trusted");

        tokio::time::sleep(lifetime).await;
        assert_eq!(ca.phase(), RotationPhase::Idle);
        assert_eq!(ca.trust_bundle(), vec![bundle[0].clone()]);
        assert!(rotation.status().next_step_in_seconds.is_none());

        // What is on disk is what is in force, across a restart.
        let reloaded = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert_eq!(reloaded.trust_bundle(), ca.trust_bundle());
    }

    /// A replica: its CA on the shared directory, its schedule and its store follower.
    fn replica(
        dir: &std::path::Path,
        lifetime: Duration,
    ) -> (
        Arc<CertificateAuthority>,
        Arc<Rotation>,
        [tokio::task::JoinHandle<()>; 2],
    ) {
        let ca = Arc::new(CertificateAuthority::load_or_create(dir, "seam.local").unwrap());
        let rotation = Rotation::new(ca.clone(), lifetime);
        let tasks = [
            tokio::spawn(rotation.clone().run()),
            tokio::spawn(crate::ca::follow::follow_store(
                ca.clone(),
                crate::ca::follow::FOLLOW_EVERY,
            )),
        ];
        (ca, rotation, tasks)
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_take_each_step_once_and_never_early() {
        let dir = tempfile::tempdir().unwrap();
        let lifetime = Duration::from_secs(60);
        let (first, rotation, _first_tasks) = replica(dir.path(), lifetime);
        let (second, _, _second_tasks) = replica(dir.path(), lifetime);
        rotation.start().unwrap();
        let introduced = first.trust_bundle()[1].clone();

        tokio::time::sleep(crate::ca::follow::FOLLOW_EVERY * 2).await;
        assert_eq!(second.trust_bundle(), first.trust_bundle(), "picked up");
        tokio::time::sleep(lifetime - crate::ca::follow::FOLLOW_EVERY * 3).await;
        assert_eq!(
            first.phase(),
            RotationPhase::Introduced,
            "promoted too early"
        );
        assert_eq!(
            second.phase(),
            RotationPhase::Introduced,
            "promoted too early"
        );
        tokio::time::sleep(lifetime * 2).await;
        for ca in [&first, &second] {
            assert_eq!(ca.phase(), RotationPhase::Idle);
            assert_eq!(
                ca.trust_bundle(),
                vec![introduced.clone()],
                "one new root, kept"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_goes_on_when_the_replica_that_started_it_dies() {
        let dir = tempfile::tempdir().unwrap();
        let lifetime = Duration::from_secs(60);
        let (first, rotation, first_tasks) = replica(dir.path(), lifetime);
        let (second, _, _second_tasks) = replica(dir.path(), lifetime);
        rotation.start().unwrap();
        let introduced = first.trust_bundle()[1].clone();
        for task in first_tasks {
            task.abort();
        }

        tokio::time::sleep(lifetime - Duration::from_secs(1)).await;
        assert_eq!(
            second.phase(),
            RotationPhase::Introduced,
            "promoted too early"
        );
        tokio::time::sleep(crate::ca::follow::FOLLOW_EVERY * 2).await;
        assert_eq!(second.phase(), RotationPhase::Promoted);
        assert_eq!(second.trust_bundle()[0], introduced, "the new root signs");
        tokio::time::sleep(lifetime).await;
        assert_eq!(second.phase(), RotationPhase::Idle);
        assert_eq!(second.trust_bundle(), vec![introduced]);
    }

    #[test]
    fn a_restart_mid_rotation_resumes_in_the_same_phase() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        ca.introduce_root().unwrap();
        for key in ["ca.key", "ca-next.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let introduced = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert_eq!(introduced.phase(), RotationPhase::Introduced);
        assert_eq!(introduced.trust_bundle(), ca.trust_bundle());
        introduced.promote_root().unwrap();
        let promoted = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert_eq!(promoted.phase(), RotationPhase::Promoted);
        assert_eq!(promoted.trust_bundle(), introduced.trust_bundle());
        let mode = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert!(!dir.path().join("ca-next.key").exists());
    }
}
