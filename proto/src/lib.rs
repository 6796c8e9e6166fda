//! The contract between `seam-proxy` and `seam-control-plane`: the `seam.v1` gRPC API
//! (generated from `seam/v1/seam.proto`) and the SPIFFE identity both sides must read
//! the same way. Each side converts these messages into its own validated types at
//! its edge; nothing here carries behaviour beyond parsing. `exposition` is the one
//! `/metrics` format rule both binaries follow, `report` the one way both word an
//! error and its causes for a person, and `codec` the gRPC codec both use.

pub mod codec;
pub mod defaults;
pub mod exposition;
pub mod report;
pub mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError};

/// Generated `seam.v1` messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("seam.v1");
}
