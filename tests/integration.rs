//! One test binary for every integration test (one link step instead of many).
mod support;

mod dashboard;
mod fuzz;
mod hardening;
mod ledger;
mod operator;
mod proxy;
