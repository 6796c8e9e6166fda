//! Tests only: a `kube::Client` over `tower_test`'s mock service, so a test plays the
//! Kubernetes API server one request at a time (no API server can run on this machine).
//! The test reads each request the code under test makes and answers it with the JSON a
//! real API server sends.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// The test's side of the mock API server.
pub struct ApiMock {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request the client made, waiting for its answer.
pub struct Call {
    pub method: Method,
    /// Path and query, e.g. `/api/v1/namespaces/seam-system/secrets/seam-ca`.
    pub path: String,
    /// The request body as JSON (`Null` when empty).
    pub body: Value,
    pub content_type: Option<String>,
    respond: SendResponse<Response<Body>>,
}

/// A client whose every request the returned `ApiMock` answers.
pub fn client() -> (kube::Client, ApiMock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiMock { handle })
}

impl ApiMock {
    /// The next request, failing the test if the client is gone.
    pub async fn next(&mut self) -> Call {
        let (request, respond) = self
            .handle
            .next_request()
            .await
            .expect("the client made no further request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a readable request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Call {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(String::new, ToString::to_string),
            body,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            respond,
        }
    }
}

impl Call {
    /// Answers with `status` and a JSON body.
    pub fn reply(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a valid status"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("JSON")))
            .expect("a valid response");
        self.respond.send_response(response);
    }

    /// Answers with a `metav1.Status` failure, as the API server does for errors.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        self.reply(
            code,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            }),
        );
    }

    /// Answers with the request's own object, as a create or replace does, with
    /// `resource_version` set.
    pub fn echo(self, status: u16, resource_version: &str) {
        let mut object = self.body.clone();
        object["metadata"]["resourceVersion"] = json!(resource_version);
        self.reply(status, &object);
    }

    /// Answers with `status` and a raw body, e.g. the lines of a watch.
    pub fn respond_raw(self, status: u16, body: String) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a valid status"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.into_bytes()))
            .expect("a valid response");
        self.respond.send_response(response);
    }
}
