//! Real processes for tests: redis-server on a free port, recording upstreams, gateways.
#![allow(dead_code)]

pub mod cluster;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod money;
pub mod process;
pub mod redis;
pub mod upstream;
pub mod wait;
