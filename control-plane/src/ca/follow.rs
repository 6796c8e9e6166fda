//! Replicas sharing a CA store: every few seconds, read the store back and put in force
//! what another replica wrote (a rotation step), so that every replica signs with the
//! current root and hands out the same trust bundle. The read runs off the async runtime
//! (it takes a file lock); a store that cannot be read is logged and the roots in force
//! keep serving.

use std::sync::Arc;
use std::time::Duration;

use seam_proto::report::error_chain;

use super::CertificateAuthority;

/// How often the store is read back: a rotation step taken on one replica is in force on
/// all within this long. Steps are one certificate lifetime apart (an hour by default),
/// so a few seconds of difference between replicas is harmless.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Re-reads the store every `every`, for as long as the task runs.
pub async fn follow_store(ca: Arc<CertificateAuthority>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let reading = ca.clone();
        match tokio::task::spawn_blocking(move || reading.pick_up_stored()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(
                error = %error_chain(&err),
                "cannot read the mesh CA's store back; keeping the roots in force"
            ),
            Err(join) => tracing::error!(error = %join, "reading the mesh CA's store back failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::RotationPhase;

    #[test]
    fn replicas_starting_at_once_on_an_empty_directory_share_one_root() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let barrier = std::sync::Barrier::new(8);
        let bundles: Vec<_> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        CertificateAuthority::load_or_create(&state, "seam.local")
                            .unwrap()
                            .trust_bundle()
                    })
                })
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert_eq!(bundles[0].len(), 1);
        assert!(
            bundles.iter().all(|b| *b == bundles[0]),
            "replicas made different roots"
        );
        let on_disk = CertificateAuthority::load_or_create(&state, "seam.local").unwrap();
        assert_eq!(on_disk.trust_bundle(), bundles[0]);
    }

    #[test]
    fn a_rotation_step_is_taken_once_and_the_other_replica_picks_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let first = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        let second = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        assert!(!second.pick_up_stored().unwrap(), "nothing changed yet");

        first.introduce_root().unwrap();
        // The second replica, asked to start a rotation too, sees the first one's.
        let err = second.introduce_root().unwrap_err();
        assert!(
            matches!(
                err,
                crate::ca::CaError::RotationInProgress(RotationPhase::Introduced)
            ),
            "{err}"
        );
        assert_eq!(second.trust_bundle(), first.trust_bundle());
        assert_eq!(first.trust_bundle().len(), 2, "one new root, not two");

        first.promote_root().unwrap();
        let changes = second.subscribe();
        assert!(second.pick_up_stored().unwrap());
        assert!(changes.has_changed().unwrap(), "the pick-up is announced");
        assert_eq!(second.phase(), RotationPhase::Promoted);
        assert_eq!(second.trust_bundle(), first.trust_bundle());
        // Both sign with the new root now: their leaves name its key as their issuer's.
        let identity = seam_proto::SpiffeId::workload("seam.local", "default", "api").unwrap();
        let new_root = key_id(&first.trust_bundle()[0], Key::Subject);
        for ca in [&first, &second] {
            let key = rcgen::KeyPair::generate().unwrap();
            let csr = rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap();
            let leaf = ca
                .sign_request(csr.der(), &identity, Duration::from_secs(60))
                .unwrap();
            assert_eq!(key_id(&leaf.der, Key::Authority), new_root);
        }
        // A promotion already taken elsewhere is not taken again.
        assert!(matches!(
            second.promote_root(),
            Err(crate::ca::CaError::NoRotationStep("promote", _))
        ));
    }

    enum Key {
        Subject,
        Authority,
    }

    /// A certificate's subject or authority key identifier.
    fn key_id(der: &[u8], which: Key) -> Vec<u8> {
        use x509_parser::extensions::ParsedExtension;
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        cert.extensions()
            .iter()
            .find_map(|extension| match (extension.parsed_extension(), &which) {
                (ParsedExtension::SubjectKeyIdentifier(id), Key::Subject) => Some(id.0.to_vec()),
                (ParsedExtension::AuthorityKeyIdentifier(aki), Key::Authority) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
            .expect("the key identifier")
    }

    #[tokio::test(start_paused = true)]
    async fn the_following_task_picks_up_a_change_within_one_period() {
        let dir = tempfile::tempdir().unwrap();
        let first = CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap();
        let second =
            Arc::new(CertificateAuthority::load_or_create(dir.path(), "seam.local").unwrap());
        let mut changes = second.subscribe();
        let following = tokio::spawn(follow_store(second.clone(), FOLLOW_EVERY));
        first.introduce_root().unwrap();
        tokio::time::timeout(FOLLOW_EVERY * 2, changes.changed())
            .await
            .expect("picked up within a period")
            .unwrap();
        assert_eq!(second.trust_bundle(), first.trust_bundle());
        following.abort();
    }
}
