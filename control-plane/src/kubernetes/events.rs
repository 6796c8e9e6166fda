//! Reports each new problem with a Service's `seam.io/policy` once, as a Kubernetes
//! Event on that Service (type Warning, reason `InvalidSeamPolicy`), where `kubectl
//! describe service` shows it. A problem that goes away and comes back is new again.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::mapping::Problem;
use super::objects;

/// The Event reason for a refused `seam.io/policy`.
pub const REASON: &str = "InvalidSeamPolicy";

/// The reporting controller's name in Events.
const CONTROLLER: &str = "seam-control-plane";

pub struct PolicyEvents {
    recorder: Recorder,
    /// The policy problems of the last report.
    reported: BTreeSet<Problem>,
}

impl PolicyEvents {
    pub fn new(client: kube::Client) -> Self {
        Self {
            recorder: Recorder::new(client, Reporter::from(CONTROLLER)),
            reported: BTreeSet::new(),
        }
    }

    /// Publishes an Event for each policy problem of `problems` that the last report did
    /// not have, on its Service (found in `services`). A failure to publish is logged:
    /// `/mesh` lists the problem anyway.
    pub async fn report(&mut self, problems: &[Problem], services: &[Arc<Service>]) {
        let current: BTreeSet<Problem> = problems
            .iter()
            .filter(|problem| problem.bad_policy)
            .cloned()
            .collect();
        for problem in new_problems(&self.reported, &current) {
            let Some(service) = services.iter().find(|service| {
                objects::name(&service.metadata) == problem.name
                    && objects::namespace(&service.metadata) == problem.namespace
            }) else {
                continue;
            };
            let event = Event {
                type_: EventType::Warning,
                reason: REASON.to_owned(),
                note: Some(truncate(&problem.message, 1000)),
                action: "ReadPolicy".to_owned(),
                secondary: None,
            };
            if let Err(err) = self
                .recorder
                .publish(&event, &service.object_ref(&()))
                .await
            {
                tracing::warn!(
                    service = %format!("{}/{}", problem.namespace, problem.name),
                    error = %err,
                    "cannot publish the InvalidSeamPolicy event"
                );
            }
        }
        self.reported = current;
    }
}

/// The problems of `current` that `previous` does not have.
pub fn new_problems<'a>(
    previous: &BTreeSet<Problem>,
    current: &'a BTreeSet<Problem>,
) -> Vec<&'a Problem> {
    current
        .iter()
        .filter(|problem| !previous.contains(problem))
        .collect()
}

/// `text` cut to at most `max` bytes, on a character boundary (an Event's note is at
/// most 1 kB).
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
