//! Reading a private endpoint's current state: the PE, its NIC(s), its DNS zone groups.
//!
//! This is "the truth" every reconcile starts from. A 404 on the PE means it is gone
//! (the delete path); a PE whose provisioning is not `Succeeded` is not ready yet and the
//! caller retries later; a NIC that is not readable yet is likewise "not ready".

use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::endpoint::ParseError;
use crate::model::{Classify, PrivateEndpoint, ResourceId, Retry};

pub const NETWORK_API: &str = "2025-07-01";

#[derive(Debug, Clone)]
pub enum EndpointState {
    Present(Box<PrivateEndpoint>),
    /// ARM answered 404 for the PE.
    Absent,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error("ARM returned a private endpoint we cannot parse: {0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    NotReady(String),
}

impl ReadError {
    /// `Retry::Transient` (see [`Classify`]).
    pub fn is_transient(&self) -> bool {
        self.retry().is_transient()
    }
}

/// ARM's own class; an endpoint we cannot parse stays so; one not ready yet is transient.
impl Classify for ReadError {
    fn retry(&self) -> Retry {
        match self {
            ReadError::Arm(e) => e.retry(),
            ReadError::Parse(_) => Retry::Permanent,
            ReadError::NotReady(_) => Retry::LATER,
        }
    }
}

/// Reads the PE and, when it is provisioned, its NICs and zone groups.
pub async fn read_endpoint(arm: &ArmClient, id: &ResourceId) -> Result<EndpointState, ReadError> {
    let body = match arm.send(ArmRequest::get(id.as_str(), NETWORK_API)).await {
        Ok(r) => r.body,
        Err(e) if e.status() == Some(404) => return Ok(EndpointState::Absent),
        Err(e) => return Err(e.into()),
    };
    let mut pe = PrivateEndpoint::from_arm_json(&body)?;
    if !pe.is_provisioned() {
        return Ok(EndpointState::Present(Box::new(pe)));
    }
    // The NICs and the zone groups are independent reads: one round trip, not two.
    let nics = pe.nic_ids.iter().map(|nic_id| {
        // Real NIC ids are well-formed; the official example misspells `providers`.
        let nic_path = nic_id.replace("/provders/", "/providers/");
        async move { (nic_id.clone(), arm.send(ArmRequest::get(nic_path, NETWORK_API)).await) }
    });
    let groups = format!("{}/privateDnsZoneGroups", id.as_str());
    let (nics, groups) =
        futures::future::join(futures::future::join_all(nics), arm.send(ArmRequest::get(groups, NETWORK_API))).await;
    for (nic_id, nic) in nics {
        match nic {
            Ok(r) => pe.add_nic(&r.body),
            Err(e) if e.status() == Some(404) => {
                return Err(ReadError::NotReady(format!("NIC {nic_id} of {} is not readable yet", pe.id)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    match groups {
        Ok(r) => pe.add_dns_zone_groups(&r.body),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(EndpointState::Present(Box::new(pe)))
}
