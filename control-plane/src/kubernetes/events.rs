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

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::kubernetes::api_mock;

    fn problem(name: &str, message: &str) -> Problem {
        Problem {
            kind: "Service",
            namespace: "shop".into(),
            name: name.into(),
            bad_policy: true,
            message: message.into(),
        }
    }

    fn service(name: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}") }
            }))
            .unwrap(),
        )
    }

    /// The mock stands in for the API server (none can run here): it takes the Events
    /// the recorder creates.
    #[tokio::test]
    async fn each_new_policy_problem_is_one_warning_event_on_its_service() {
        let (client, mut api) = api_mock::client();
        let services = [service("web"), service("api")];
        let mut events = PolicyEvents::new(client);
        let first = vec![problem(
            "web",
            "seam.io/policy is refused at line 2, column 13",
        )];

        let reporting = async {
            events.report(&first, &services).await;
            // The same problem again: nothing new to say.
            events.report(&first, &services).await;
            let not_policy = Problem {
                bad_policy: false,
                ..problem("api", "the Service has no TCP port")
            };
            let second = vec![
                first[0].clone(),
                not_policy,
                problem("api", "seam.io/policy is refused: colour"),
            ];
            events.report(&second, &services).await;
        };
        let answering = async {
            for (name, note) in [
                ("web", "seam.io/policy is refused at line 2, column 13"),
                ("api", "seam.io/policy is refused: colour"),
            ] {
                let call = api.next().await;
                assert_eq!(call.method, Method::POST);
                assert_eq!(
                    call.path.split('?').next(),
                    Some("/apis/events.k8s.io/v1/namespaces/shop/events")
                );
                assert_eq!(call.body["type"], "Warning");
                assert_eq!(call.body["reason"], REASON);
                assert_eq!(call.body["note"], note);
                assert_eq!(call.body["regarding"]["kind"], "Service");
                assert_eq!(call.body["regarding"]["name"], name);
                assert_eq!(call.body["regarding"]["uid"], format!("uid-{name}"));
                call.echo(201, "1");
            }
        };
        tokio::join!(reporting, answering);
    }

    #[test]
    fn a_problem_that_goes_and_comes_back_is_new_again() {
        let web = problem("web", "bad");
        let none = BTreeSet::new();
        let some: BTreeSet<Problem> = [web.clone()].into();
        assert_eq!(new_problems(&none, &some), [&web]);
        assert!(new_problems(&some, &some).is_empty());
        assert!(new_problems(&some, &none).is_empty());
    }
}
