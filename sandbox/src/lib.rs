//! The local sandbox: in-process fakes of the Azure services and vendor APIs we call,
//! on loopback, and the harness that wires the real product to them. The demo, the
//! end-to-end tests and the benchmarks use the same fakes.

pub mod bind;
pub mod demo;
pub mod events;
pub mod fake_arm;
pub mod fake_servicebus;
pub mod fake_table;
pub mod fake_vendors;
pub mod harness;
pub mod host_emulator;
pub mod loopback;
pub mod standalone;
pub mod vendors;
