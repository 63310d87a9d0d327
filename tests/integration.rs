//! One test binary for every integration test (one link step instead of many).
mod support;

mod charges;
mod dashboard;
mod fuzz;
mod hardening;
mod ledger;
mod openapi;
mod operator;
mod proxy;
