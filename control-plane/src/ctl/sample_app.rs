//! The sample service that `seamctl demo` runs behind each proxy (`seamctl sample-app`,
//! hidden from help). It serves HTTP/1.1 and h2c on its `--listen` address and answers
//! every request with a JSON line naming itself and the caller identity its proxy vouched
//! for (`x-seam-client-id`). With `--next`, it first calls that service the way any meshed
//! app would: plain HTTP to its own proxy's outbound listener with `Host: <next>`, and
//! nests the answer under `next`, so one response shows the identities along the chain:
//!
//! `{"service":"front","caller":"spiffe://seam.local/ns/default/sa/loadgen","next":{...}}`
//!
//! A failed hop answers 502 with an `error` field saying which hop failed and why; the
//! hops before it nest that answer as usual, so the demo can show where the chain broke.
//!
//! In containers (deploy/compose) three more flags matter: `--instance` (the container's
//! `HOSTNAME`) names the replica in each answer, so a caller can see which instances
//! served it; `--next-url http://front:8080` calls the next hop directly, as an app that
//! knows nothing of Seam does in transparent mode; and `--drive RATE` makes the app send
//! that many requests a second to itself, reporting what came back every ten seconds on
//! stdout (the compose demo's live traffic).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

mod drive;

use crate::accept::next_connection;
use crate::launch;

/// The header an inbound proxy sets to the caller's SPIFFE id.
pub const CLIENT_ID_HEADER: &str = "x-seam-client-id";

/// How long a hop waits for the rest of the chain before answering 502 itself.
const NEXT_HOP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct SampleAppArgs {
    /// The service this app is, echoed in every answer.
    #[arg(long)]
    pub name: String,
    /// Where to serve HTTP/1.1 and h2c (port 0 picks one; the listening line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The service to call on every request, through the local proxy.
    #[arg(long, requires = "outbound")]
    pub next: Option<String>,
    /// The local proxy's outbound listener.
    #[arg(long, requires = "next")]
    pub outbound: Option<SocketAddr>,
    /// The service to call on every request, directly at this URL (`http://front:8080`),
    /// with no proxy setting: transparent mode intercepts the connection.
    #[arg(long, conflicts_with = "next", value_name = "URL")]
    pub next_url: Option<http::Uri>,
    /// This replica's name, echoed in every answer (a container's hostname).
    #[arg(long, env = "HOSTNAME")]
    pub instance: Option<String>,
    /// Send this many requests a second to this app itself (and so down the chain), and
    /// report what came back every ten seconds.
    #[arg(long, value_name = "RATE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub drive: Option<u32>,
}

/// Where a hop sends its own call.
struct NextHop {
    /// The next hop's name in error messages: the service, or the URL's authority.
    service: String,
    route: NextRoute,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// How the next hop is reached.
enum NextRoute {
    /// Through the local proxy's outbound listener, naming the service in `Host`.
    Outbound(SocketAddr),
    /// Straight at a URL's authority (transparent mode redirects it).
    Direct(http::uri::Authority),
}

struct App {
    name: String,
    instance: Option<String>,
    next: Option<NextHop>,
}

/// Serves until SIGTERM or SIGINT, then returns (in-flight connections are dropped: the
/// app holds no state worth draining for).
pub async fn run(args: SampleAppArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let client = || Client::builder(TokioExecutor::new()).build_http();
    let next = match (args.next, args.outbound, args.next_url) {
        (Some(service), Some(outbound), _) => Some(NextHop {
            service,
            route: NextRoute::Outbound(outbound),
            client: client(),
        }),
        (_, _, Some(url)) => {
            let authority = url
                .authority()
                .with_context(|| format!("--next-url {url} names no host"))?
                .clone();
            Some(NextHop {
                service: authority.to_string(),
                route: NextRoute::Direct(authority),
                client: client(),
            })
        }
        _ => None,
    };
    let app = Arc::new(App {
        name: args.name,
        instance: args.instance,
        next,
    });
    launch::print_listening_line(&[("app", local)]);
    let _drive = args.drive.map(|rate| drive::start(&app.name, local, rate));

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = next_connection(&listener, "app") => accepted,
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// What a sample app answers. A struct rather than a `serde_json::Value` so the fields
/// print in reading order (service, caller, then the rest of the chain).
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Box<Answer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let caller = request
            .headers()
            .get(CLIENT_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut answer = Answer {
            service: self.name.clone(),
            instance: self.instance.clone(),
            caller,
            next: None,
            error: None,
        };
        let mut status = StatusCode::OK;
        if let Some(next) = &self.next {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |path| path.as_str());
            match next.call(path).await {
                Ok((next_status, next_answer)) => {
                    if next_status != StatusCode::OK {
                        status = StatusCode::BAD_GATEWAY;
                    }
                    match next_answer {
                        NextAnswer::Chain(next_answer) => answer.next = Some(next_answer),
                        // The proxy itself answered (503 unknown service, 502 peer down...).
                        NextAnswer::Text(body) => {
                            answer.error = Some(format!(
                                "{} → {}: {} {}",
                                self.name,
                                next.service,
                                next_status.as_u16(),
                                body.trim()
                            ));
                        }
                    }
                }
                Err(error) => {
                    status = StatusCode::BAD_GATEWAY;
                    answer.error = Some(format!("{} → {}: {error:#}", self.name, next.service));
                }
            }
        }
        let body = serde_json::to_string(&answer).unwrap_or_else(|error| {
            status = StatusCode::INTERNAL_SERVER_ERROR;
            format!("cannot encode the answer: {error}")
        });
        let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// What the next hop answered: its own chain, or a text body from a proxy in between.
enum NextAnswer {
    Chain(Box<Answer>),
    Text(String),
}

impl NextHop {
    async fn call(&self, path: &str) -> anyhow::Result<(StatusCode, NextAnswer)> {
        let request = match &self.route {
            // Origin-form on the wire to the outbound listener; `Host` names the service.
            NextRoute::Outbound(outbound) => Request::get(format!("http://{outbound}{path}"))
                .header(header::HOST, &self.service)
                .body(Empty::new()),
            NextRoute::Direct(authority) => {
                Request::get(format!("http://{authority}{path}")).body(Empty::new())
            }
        }
        .context("cannot build the request")?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(NEXT_HOP_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("timeout after {NEXT_HOP_TIMEOUT:?}"))?
            .with_context(|| match &self.route {
                NextRoute::Outbound(outbound) => format!("outbound proxy {outbound} failed"),
                NextRoute::Direct(authority) => format!("{authority} failed"),
            })?;
        Ok(match serde_json::from_slice::<Answer>(&body) {
            Ok(answer) => (status, NextAnswer::Chain(Box::new(answer))),
            _ => (
                status,
                NextAnswer::Text(String::from_utf8_lossy(&body).into_owned()),
            ),
        })
    }
}
