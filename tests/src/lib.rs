//! seam-tests: the end-to-end test kit. It starts Seam's real binaries (through
//! `seam_control_plane::launch`) on loopback ports chosen by the OS, writes the mesh file
//! they read, runs real upstream apps (an HTTP echo, a gRPC health service, one that
//! records what it gets: `recording`) and real clients (HTTP/1.1, h2c, gRPC, raw TLS),
//! and waits on the binaries' own state endpoints with deadlines, never on sleeps. For
//! transparent mode it also builds pods out of Linux network namespaces (`netns`,
//! `pod_network`; `netns_files` gives one its own `/etc/hosts`), runs `seam-proxy init`
//! in them (`proxy_init`) and tells where an intercepted connection went (`interception`,
//! `intercepted_pods`); those system tests need root. `replicas` runs several control planes
//! over one mesh. `compose` runs the demo compose project
//! of deploy/compose on the real Docker engine. `kube_api` stands in for a Kubernetes API
//! server (none can run here) for the control plane's `--source kubernetes`. The tests themselves live in `tests/`.

pub mod browser;
pub mod certify;
pub mod client;
pub mod compose;
pub mod dashboard;
pub mod faulty;
pub mod foreign_compose;
pub mod fresh_binaries;
pub mod intercepted_pods;
pub mod interception;
pub mod kube_api;
pub mod kube_pods;
pub mod load;
pub mod logs;
pub mod mesh;
pub mod mesh_ca;
pub mod meshed_pods;
pub mod netns;
pub mod netns_files;
pub mod otlp;
pub mod pod_network;
pub mod policy_mesh;
pub mod prometheus;
pub mod proxy;
pub mod proxy_init;
pub mod recording;
pub mod replicas;
pub mod streams;
pub mod tls;
pub mod two_hop;
pub mod upstream;
pub mod wait;

pub use mesh::TestMesh;
pub use proxy::TestProxy;
pub use two_hop::{CallerAndEndpoints, TwoHop};
pub use upstream::{EchoServer, GrpcHealthServer};
