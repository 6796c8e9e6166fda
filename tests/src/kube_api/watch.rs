//! A WATCH as the API server answers it: a chunked response, one JSON event per line
//! (`{"type":"ADDED","object":{...}}`), kept open until `timeoutSeconds` pass, the client
//! goes away, or the test breaks every open watch. It starts after the `resourceVersion`
//! asked for (an older, compacted one gets an `ERROR` event with a 410 `Status`, and the
//! client must list again); with `sendInitialEvents=true` it first sends every current
//! object as ADDED and then the BOOKMARK marked `k8s.io/initial-events-end`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::store::{Selectors, Store};

/// What one watch follows.
pub struct WatchRequest {
    pub resource: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// `None`: from now (`resourceVersion` absent or `0`).
    pub since: Option<u64>,
    pub send_initial_events: bool,
    pub timeout: Duration,
    /// The kind of the objects (for the bookmark's object).
    pub kind: String,
    pub api_version: String,
}

/// The response body of a watch; its lines are written by a task that follows the store.
pub fn stream(
    request: WatchRequest,
    store: Arc<Mutex<Store>>,
    mut changed: watch::Receiver<u64>,
    mut broken: watch::Receiver<u64>,
) -> BoxBody<Bytes, Infallible> {
    let (lines, body) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let generation = *broken.borrow_and_update();
        let send = |event: Value| {
            let lines = lines.clone();
            async move {
                let mut line = serde_json::to_vec(&event).expect("JSON values serialize");
                line.push(b'\n');
                lines.send(Bytes::from(line)).await.is_ok()
            }
        };
        let mut since = {
            let store = store.lock();
            match request.since {
                Some(since) => since,
                None => store.version(),
            }
        };
        if request.send_initial_events {
            let (objects, version) = {
                let store = store.lock();
                let namespace = request.namespace.as_deref();
                (
                    store.list(&request.resource, namespace, &request.selectors),
                    store.version(),
                )
            };
            for object in objects {
                if !send(json!({"type": "ADDED", "object": object})).await {
                    return;
                }
            }
            since = version;
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": request.kind,
                    "apiVersion": request.api_version,
                    "metadata": {
                        "resourceVersion": version.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            });
            if !send(bookmark).await {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + request.timeout;
        loop {
            let changes = store.lock().changes_after(
                since,
                &request.resource,
                request.namespace.as_deref(),
                &request.selectors,
            );
            let Some(changes) = changes else {
                let gone = json!({
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": format!("too old resource version: {since}"),
                        "reason": "Expired",
                        "code": 410,
                    },
                });
                let _ = send(gone).await;
                return;
            };
            for change in changes {
                since = change.version;
                if !send(json!({"type": change.kind, "object": change.object})).await {
                    return;
                }
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                _ = broken.wait_for(|now| *now != generation) => return,
                () = tokio::time::sleep_until(deadline) => return,
                () = lines.closed() => return,
            }
        }
    });
    let frames = ReceiverStream::new(body).map(|line| Ok::<_, Infallible>(Frame::data(line)));
    BoxBody::new(StreamBody::new(frames))
}
