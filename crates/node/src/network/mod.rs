//! Pod networking of a node: [`Cni`] attaches a pod's network namespace to the node bridge
//! through the standard CNI plugins (`bridge` + `host-local`, and `portmap` for host ports) and
//! detaches it again. The namespaces themselves are created by the runtime's sandbox.
//!
//! Architecture invariant: networking changes nothing outside the pod's namespace but the
//! node bridge, its veth ends, host-local's allocation files and, for a pod with host ports
//! only, portmap's DNAT rules for exactly those ports (removed when the pod is detached).

mod cni;
mod error;

pub use cni::{
    Cni, CniConfig, PodAddress, PortMapping, PortProtocol, CNI_VERSION, MAX_PLUGIN_OUTPUT_BYTES,
};
pub use error::NetworkError;
