//! The vocabulary: resource ids and the private endpoint as read from ARM.

pub mod endpoint;
pub mod endpoint_url;
pub mod resource_id;

pub use endpoint::{ConnectionStatus, LinkConnection, LinkTarget, NicIpConfig, PrivateEndpoint};
pub use resource_id::{IdError, ResourceId};
