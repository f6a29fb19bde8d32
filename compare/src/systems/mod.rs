//! The compared systems, one module each, all behind [`System`](crate::system::System).

pub mod idemdb;
pub mod postgres;
pub mod redb;
pub mod redis;
pub mod sqlite;
