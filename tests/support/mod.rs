//! Real processes for tests: redis-server on a free port, recording upstreams, gateways.
#![allow(dead_code)]

pub mod abort;
pub mod access_log;
pub mod breaking_upstream;
pub mod cluster;
pub mod gateway;
pub mod http;
pub mod process;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod upstream;
