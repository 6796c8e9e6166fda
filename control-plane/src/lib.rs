//! seam-control-plane: the mesh's certificate authority, its model of services built from
//! service discovery, and the gRPC push of that model to every proxy; plus `seamctl`.

pub mod accept;
pub mod admin;
pub mod app;
pub mod ca;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod discovery;
pub mod dns;
pub mod identity;
pub mod injector;
pub mod kubernetes;
pub mod launch;
pub mod mesh_file;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod rotation;
pub mod source;
pub mod tap;
pub mod tls;
pub mod trust_bundle_file;
pub mod webhook;
