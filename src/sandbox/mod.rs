//! The local sandbox: in-process fakes of the Azure services we call, on loopback.
//! The demo and the integration tests use the same fakes.

pub mod fake_arm;
pub mod fake_servicebus;
pub mod host_emulator;
