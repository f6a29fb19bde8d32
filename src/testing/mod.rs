//! Tools for proving a store keeps its promises (feature `testing`): a simulated disk that
//! injects faults and crashes below the engine, and operation sequences checked step by step
//! against the reference model (the pure state machine over a map).
//!
//! idemdb's own reliability tests and fuzz targets are built on these; they are public so a
//! service can run the same checks over its own settings. Nothing here is compiled into a
//! normal build.

mod sequence;
mod sim_disk;

pub use crate::storage::{Backend, MemoryBackend, StorageRole};
pub use sequence::{
    Divergence, Harness, HarnessStats, KEYS, LEASES, SCOPES, START, Step, small_store,
};
pub use sim_disk::{CrashMode, FaultyBackend, Persistence, SECTOR, SimStorage};
