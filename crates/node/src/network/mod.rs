//! Pod networking of a node: [`Cni`] attaches a pod's network namespace to the node bridge
//! through the standard CNI plugins (`bridge` + `host-local`) and detaches it
//! again. The namespaces themselves are created by the runtime's sandbox.
//!
//! Architecture invariant: networking changes nothing outside the pod's namespace but the
//! node bridge, its veth ends and host-local's allocation files (no iptables rules).

mod cni;
mod error;

pub use cni::{Cni, CniConfig, PodAddress, CNI_VERSION, MAX_PLUGIN_OUTPUT_BYTES};
pub use error::NetworkError;
